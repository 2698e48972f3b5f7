"""Causal language modelling (GPT): predict every next token.

Decoder-only: a block of seq_len + 1 packed tokens gives inputs block[:-1] and labels block[1:], both seq_len
long, so no token is wasted and nothing is padded (documents inside a block are joined by EOS, as in GPT-2).

Encoder-decoder: a prefix LM (T5's "prefix_lm"). Each row draws a split point s in [1, seq_len]: the prefix
block[:s] goes to the encoder, right-padded to seq_len with an attention_mask; the continuation block[s:] is the
target, and the decoder reads [decoder start] + continuation[:-1], right-padded (labels -100 on padding). The
decoder's padding is at the end of a causal stack, so no real position can see it and no decoder_attention_mask
is needed (which keeps the fast causal attention kernels). The mode follows the architecture given to
`check_arch`, unless `prefix_lm` is set explicitly.
"""
import torch

from . import register
from .base import Objective, as_blocks, decoder_inputs, predict, unwrap


@register
class CausalLM(Objective):
    name = "clm"
    archs = ("decoder", "encoder-decoder")
    special_tokens = ("pad_token", "eos_token")

    def __init__(self, tokenizer, prefix_lm: bool | None = None):
        super().__init__(tokenizer)
        self._prefix_lm = prefix_lm
        # placeholder start token (T5's convention: pad); loss() uses the model config's when it has one
        self.decoder_start_id = self.pad_id

    @property
    def prefix_lm(self) -> bool:
        return self._prefix_lm if self._prefix_lm is not None else self.arch == "encoder-decoder"

    def block_length(self, seq_len):
        return seq_len + 1

    def collate(self, blocks, generator):
        block = as_blocks(blocks)
        if block.shape[1] < 2:
            raise ValueError("clm needs blocks of at least 2 tokens (block_length(seq_len) = seq_len + 1)")
        if not self.prefix_lm:
            return {"input_ids": block[:, :-1], "labels": block[:, 1:]}
        batch, length = block.shape
        seq_len = length - 1
        split = torch.randint(1, length, (batch, 1), generator=generator)  # prefix length, 1 .. seq_len
        pos = torch.arange(seq_len).expand(batch, seq_len)
        in_prefix = pos < split
        encoder = torch.where(in_prefix, block[:, :seq_len], self.pad_id)
        source = (split + pos).clamp(max=length - 1)  # position in the block of each target token
        in_target = split + pos < length
        labels = torch.where(in_target, block.gather(1, source), -100)
        previous = torch.where(in_target, block.gather(1, (source - 1).clamp(min=0)), self.pad_id)
        previous[:, 0] = self.decoder_start_id
        return {"input_ids": encoder, "attention_mask": in_prefix.long(),
                "decoder_input_ids": previous, "labels": labels}

    def loss(self, model, batch):
        seq2seq = unwrap(model).config.arch == "encoder-decoder"
        if seq2seq != ("decoder_input_ids" in batch):
            raise ValueError(f"clm batch built {'with' if not seq2seq else 'without'} prefix LM for "
                             f"{'an encoder-decoder' if seq2seq else 'a decoder'} model; call "
                             "objective.check_arch(model.config.arch) before collate")
        if seq2seq:
            hidden = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=decoder_inputs(model, batch))
        else:
            hidden = model(batch["input_ids"])
        loss, metrics = predict(model, hidden, batch["labels"])
        metrics["perplexity"] = metrics["loss"].exp()
        return loss, metrics

    def n_tokens(self, batch):
        batch_size, seq_len = batch["labels"].shape
        return batch_size * (seq_len + 1)
