"""Tiny tokenizers, blocks and models shared by the objective tests (built here, never read from disk)."""
import functools

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from models import ModelConfig, Transformer

TEXT = [
    "The quick brown fox jumps over the lazy dog. It was not amused!",
    "Packing documents joins them with a separator token, then cuts the stream into blocks.",
    "Whole word masking never splits a word into pieces. Does it? It does not.",
    "Span corruption replaces random spans with sentinels; the decoder predicts the missing spans.",
    "Text infilling deletes spans of words and leaves a single mask token where each span was.",
    "Language models predict the next token from everything that came before it.",
] * 4
SENTINELS = [f"<extra_id_{i}>" for i in range(100)]


@functools.lru_cache(maxsize=None)
def wordpiece():
    """BERT-like: [PAD] [UNK] [CLS] [SEP] [MASK], "##" continuation pieces, lower-cased."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(TEXT, trainers.WordPieceTrainer(
        vocab_size=150, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]")


@functools.lru_cache(maxsize=None)
def bpe(sentinels: bool = False):
    """GPT-2/BART-like byte-level BPE: <s> <pad> </s> <unk> <mask> (+ <extra_id_N> when asked)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + (SENTINELS if sentinels else [])
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=400 if sentinels else 300, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    extra = {"additional_special_tokens": SENTINELS} if sentinels else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", mask_token="<mask>", **extra)


@functools.lru_cache(maxsize=None)
def unigram():
    """T5-like: <pad> </s> <unk> <extra_id_0..99>, Metaspace "▁" word markers."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(TEXT, trainers.UnigramTrainer(
        vocab_size=220, special_tokens=["<pad>", "</s>", "<unk>"] + SENTINELS, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=SENTINELS)


def text_blocks(tokenizer, batch: int, length: int) -> torch.Tensor:
    """Packed blocks of real text: documents joined with EOS, cut into [batch, length]."""
    stream = []
    while len(stream) < batch * length:
        for doc in TEXT:
            stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(stream[:batch * length]).view(batch, length)


def random_blocks(tokenizer, batch: int, length: int, seed: int = 0, special_rate: float = 0.05) -> torch.Tensor:
    """Uniform non-special ids with some special tokens sprinkled in (not the pad token: packed text never holds
    it; only the corpus's last block ends in padding, see padded_blocks)."""
    g = torch.Generator().manual_seed(seed)
    specials = torch.tensor([t for t in tokenizer.all_special_ids if t != tokenizer.pad_token_id])
    ordinary = torch.tensor([v for v in range(len(tokenizer)) if v not in set(tokenizer.all_special_ids)])
    ids = ordinary[torch.randint(len(ordinary), (batch, length), generator=g)]
    sprinkle = torch.rand(batch, length, generator=g) < special_rate
    return torch.where(sprinkle, specials[torch.randint(len(specials), (batch, length), generator=g)], ids)


# the model shape each objective trains in these tests
ARCH_PRESET = {"encoder": "bert", "decoder": "gpt2", "encoder-decoder": "t5"}


def model_config(preset: str, tokenizer, **overrides) -> ModelConfig:
    """A 1-layer d_model 32 config of the preset (or of an architecture's preset), sized to the tokenizer, no
    dropout, with the preset's decoder start role mapped onto the tokenizer (T5: pad, BART: eos)."""
    preset = ARCH_PRESET.get(preset, preset)
    sizes = dict(d_model=32, n_layers=1, n_heads=4, d_ff=64, vocab_size=len(tokenizer), max_seq_len=128,
                 dropout=0.0, pad_token_id=tokenizer.pad_token_id)
    if preset == "t5":
        sizes.update(head_dim=8, decoder_start_token_id=tokenizer.pad_token_id)
    if preset == "bart":
        sizes.update(decoder_start_token_id=tokenizer.eos_token_id)
    return ModelConfig.preset(preset, **{**sizes, **overrides})


def padded_blocks(tokenizer, batch: int, length: int, real: int) -> torch.Tensor:
    """Text blocks whose last row holds `real` tokens and then the pad token (data.tail pad's last block)."""
    blocks = text_blocks(tokenizer, batch, length)
    blocks[-1, real:] = tokenizer.pad_token_id
    return blocks


def tiny_model(preset: str, tokenizer, **overrides) -> Transformer:
    """A Transformer of model_config(preset, tokenizer), seeded."""
    torch.manual_seed(0)
    return Transformer(model_config(preset, tokenizer, **overrides))


def train_steps(objective, model, batch, steps: int = 8, lr: float = 1e-2):
    """Losses before and after a few AdamW steps on one fixed batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps + 1):
        loss, metrics = objective.loss(model, batch)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def merge_by_sentinel(inputs, targets, sentinels):
    """Put each target span back where its sentinel stands in the inputs (T5's postprocessing, inverted)."""
    index = {s: k for k, s in enumerate(sentinels)}
    spans, current = {}, None
    for t in targets[:-1]:
        if t in index:
            current = index[t]
            spans[current] = []
        else:
            spans[current].append(t)
    merged = []
    for t in inputs[:-1]:
        merged += spans[index[t]] if t in index else [t]
    return merged
