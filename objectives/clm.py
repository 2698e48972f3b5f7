"""Causal language modelling (GPT): predict every next token.

Decoder-only: a block of seq_len + 1 packed tokens gives inputs block[:-1] and labels block[1:], both seq_len
long, so no token is wasted and nothing is padded (documents inside a block are joined by EOS, as in GPT-2).

Encoder-decoder: a prefix LM (T5's "prefix_lm"). Each row draws a split point s in [1, seq_len]: the prefix
block[:s] goes to the encoder, right-padded to seq_len with an attention_mask; the continuation block[s:] is the
target, and the decoder reads [decoder start] + continuation[:-1], right-padded (labels -100 on padding). The
decoder's padding is at the end of a causal stack, so no real position can see it and no decoder_attention_mask
is needed (which keeps the fast causal attention kernels). The mode follows the model's architecture.

With documents on, attention is block-causal (segment_ids: a token sees the earlier tokens of its own document,
positions restart at each one) and the first token of a document is no target, since only the previous document
precedes it (Megatron's eod_mask_loss); the prefix LM then splits every document of a block on its own.
"""
from dataclasses import dataclass

import torch

from models.errors import UserError

from .base import Objective, as_blocks, model_inputs, predict, register, with_padding


@dataclass
class CausalLMOptions:
    prefix_lm: bool | None = None  # None: prefix LM exactly when the model is an encoder-decoder

    def check(self):
        pass


@register
class CausalLM(Objective):
    name = "clm"
    title = "causal language modeling (GPT)"
    hub_tag = "causal-lm"
    archs = ("decoder", "encoder-decoder")
    special_tokens = ("pad_token", "eos_token")
    perplexity = True
    loss_meaning = "next-token cross-entropy on every token, each predicted from the tokens before it"
    Options = CausalLMOptions
    document_aware = True

    def __init__(self, tokenizer, model_cfg, options=None, documents=False):
        super().__init__(tokenizer, model_cfg, options, documents)
        seq2seq = model_cfg.arch == "encoder-decoder"
        if self.options.prefix_lm is not None and self.options.prefix_lm != seq2seq:
            raise UserError(f"objective 'clm': prefix_lm={self.options.prefix_lm} does not fit {model_cfg.arch} "
                            f"models (a prefix LM needs an encoder-decoder, and an encoder-decoder trains only as "
                            f"one); remove the option")
        self.prefix_lm = seq2seq

    def block_length(self, seq_len):
        return seq_len + 1

    def collate(self, blocks, generator):
        block = as_blocks(blocks)
        if block.shape[1] < 2:
            raise ValueError("clm needs blocks of at least 2 tokens (block_length(seq_len) = seq_len + 1)")
        real = self.real_tokens(block)  # padding (data.tail pad) is never a target; it is right padding
        if self.prefix_lm and self.documents:
            return self._collate_prefix_documents(block, real, generator)
        if not self.prefix_lm:
            labels = block[:, 1:].masked_fill(~real[:, 1:], -100)
            if not self.documents:
                return {"input_ids": block[:, :-1], "labels": labels}
            # the token after an EOS starts another document: nothing of this one may predict it
            labels = labels.masked_fill(block[:, :-1] == self.eos_id, -100)
            return {"input_ids": block[:, :-1], "labels": labels, "segment_ids": self.document_ids(block, real)[:, :-1]}
        batch, length = block.shape
        seq_len = length - 1
        split = torch.randint(1, length, (batch, 1), generator=generator)  # prefix length, 1 .. seq_len
        n_real = real.sum(dim=1, keepdim=True)
        split = 1 + (split - 1) * (n_real - 1).clamp(min=1) // seq_len  # a padded row: within its real tokens
        pos = torch.arange(seq_len).expand(batch, seq_len)
        in_prefix = (pos < split) & real[:, :seq_len]
        encoder = torch.where(in_prefix, block[:, :seq_len], self.pad_id)
        source = (split + pos).clamp(max=length - 1)  # position in the block of each target token
        in_target = (split + pos < length) & real.gather(1, source)
        labels = torch.where(in_target, block.gather(1, source), -100)
        previous = torch.where(in_target, block.gather(1, (source - 1).clamp(min=0)), self.pad_id)
        previous[:, 0] = self.decoder_start_id
        return with_padding({"input_ids": encoder, "decoder_input_ids": previous, "labels": labels},
                            "attention_mask", in_prefix)

    def _collate_prefix_documents(self, block, real, generator):
        """Prefix LM inside each document: document i of a row splits at s_i, uniform in [1, n_i - 1]; the
        prefixes go to the encoder, the continuations to the decoder, each behind the decoder start token (t5x's
        per-segment shift), both sides in document order and right-padded to seq_len. A lone EOS (an empty
        document, or the end of one the block cut) has nothing to split and is left out."""
        batch, length = block.shape
        draws = torch.rand(batch, length, generator=generator)
        rows = []
        for r in range(batch):
            row = block[r, :int(real[r].sum())]
            documents = [(a, b) for a, b, _ in self.documents_of(row) if b - a >= 2]
            splits = [a + 1 + int(draws[r, k] * (b - a - 1)) for k, (a, b) in enumerate(documents)]
            rows.append([(row[a:s], row[s:b]) for (a, b), s in zip(documents, splits)])
        return self.pack_examples(rows, length - 1, length - 1)

    def loss(self, model, batch):
        keys = ("input_ids", "attention_mask", "decoder_input_ids", "segment_ids", "decoder_segment_ids")
        return predict(model, model(**model_inputs(batch, *keys)), batch["labels"])
