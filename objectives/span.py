"""Span corruption (T5): replace random spans with sentinels, predict the spans.

A port of T5's `random_spans_noise_mask`, `noise_span_to_unique_sentinel` and
`compute_input_and_target_lengths` (text-to-text-transfer-transformer preprocessors.py, as in Hugging Face's
run_t5_mlm_flax.py), with the NumPy shuffles replaced by draws from the torch generator:

- a block of L raw tokens has round(L * noise_density) noise tokens in round(noise / mean_span_length) spans;
  noise and non-noise are each cut into that many non-empty runs at uniformly random places and interleaved,
  starting with non-noise. The counts depend on L only, so every row has the same input and target length and
  nothing is padded;
- inputs: the non-noise tokens, each noise span replaced by one sentinel (<extra_id_0> first, in order), EOS;
  targets: the complement, each non-noise span replaced by its sentinel, so the target reads
  <extra_id_0> span0 <extra_id_1> span1 ... EOS;
- `block_length(seq_len)` is the largest L whose inputs fit seq_len (512 -> 568 raw, 114 targets). The inputs
  are then exactly seq_len long for any noise_density < 0.5 and seq_len >= 10; T5's own arithmetic leaves them
  one short for a few lengths at noise_density 0.5 (its targets-length adjustment) and below 10;
- the decoder reads the targets shifted right behind the decoder start token (the model config's; T5: pad);
- the corpus's last block with data.tail pad is corrupted over its real tokens only, its inputs and targets
  right-padded (an attention_mask, targets -100).

Spans are counted from min(noise, non-noise) as in Hugging Face's port; for noise_density <= 0.5 this is T5's
count, above it keeps every non-noise run non-empty.

With documents on (t5x's packed examples), each document of a block (its text without the trailing EOS) is
corrupted as its own example, with its own counts and sentinels from <extra_id_0>; a text of 1 token is not
corrupted (inputs: text + EOS, targets: EOS), and a lone EOS (an empty document, or the end of one the block cut)
is left out. The documents' inputs and targets are concatenated in order
with segment_ids / decoder_segment_ids (document k is segment k on both sides, -1 on padding) and the decoder
reads each target behind its own decoder start token. Inputs are padded to the width the block gets without
documents; if they would be longer (short documents lose less to corruption), the last documents' texts are
shortened, or dropped, until they fit, and what is cut is not trained on.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.errors import UserError

from .base import Objective, as_blocks, check_fraction, cut, model_inputs, predict, register, with_padding
from .scoring import span_rows


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple:
    """(noise tokens, noise spans) for a block of `length` tokens, as random_spans_noise_mask counts them."""
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(min(num_noise, length - num_noise) / mean_span_length)), 1)
    return num_noise, num_spans


def corrupted_lengths(length: int, noise_density: float, mean_span_length: float) -> tuple:
    """(input length, target length) after corrupting `length` raw tokens: one sentinel per span, plus EOS."""
    noise, spans = span_counts(length, noise_density, mean_span_length)
    return length - noise + spans + 1, noise + spans + 1


def compute_input_and_target_lengths(inputs_length: int, noise_density: float, mean_span_length: float):
    """T5's arithmetic: the raw length whose corrupted inputs fit `inputs_length`, and the target length.
    (T5 starts the search at inputs_length; when one-token spans make the inputs longer than the raw text, it
    first steps down here.)"""
    tokens = inputs_length
    while tokens > 2 and corrupted_lengths(tokens, noise_density, mean_span_length)[0] > inputs_length:
        tokens -= 1
    while corrupted_lengths(tokens + 1, noise_density, mean_span_length)[0] <= inputs_length:
        tokens += 1
    _, targets = corrupted_lengths(tokens, noise_density, mean_span_length)
    if noise_density == 0.5 and targets > inputs_length:  # T5: keep targets at the (round) inputs length
        tokens, targets = tokens - 1, targets - 1
    return tokens, targets


def random_segmentation(num_items: int, num_segments: int, batch: int, generator) -> torch.Tensor:
    """[batch, num_segments] lengths of num_items split into non-empty runs at uniformly random cut points
    (T5 shuffles num_segments - 1 ones among num_items - 1 gaps; choosing the gaps by a random sort is the same)."""
    gaps = torch.rand(batch, num_items - 1, generator=generator).argsort(dim=1)[:, :num_segments - 1] + 1
    bounds = torch.cat([torch.zeros(batch, 1, dtype=torch.long), gaps.sort(dim=1).values,
                        torch.full((batch, 1), num_items)], dim=1)
    return bounds.diff(dim=1)


def random_spans_noise_mask(batch: int, length: int, noise_density: float, mean_span_length: float,
                            generator) -> torch.Tensor:
    """Bool [batch, length]: True on noise. Alternating non-noise / noise runs, starting with non-noise."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    noise_lengths = random_segmentation(num_noise, num_spans, batch, generator)
    keep_lengths = random_segmentation(length - num_noise, num_spans, batch, generator)
    interleaved = torch.stack([keep_lengths, noise_lengths], dim=2).reshape(batch, 2 * num_spans)
    span_starts = interleaved.cumsum(dim=1)[:, :-1]
    start_indicator = torch.zeros(batch, length, dtype=torch.long).scatter_(1, span_starts, 1)
    return start_indicator.cumsum(dim=1) % 2 == 1


def noise_span_to_unique_sentinel(ids, noise, sentinels, eos_id) -> torch.Tensor:
    """Each run of `noise` becomes one sentinel (the k-th run gets sentinels[k]); EOS is appended.
    Every row keeps the same number of tokens (the counts depend on the length only)."""
    first = noise & ~F.pad(noise[:, :-1], (1, 0), value=False)
    run = (first.cumsum(dim=1) - 1).clamp(min=0)
    values = torch.where(first, sentinels[run], ids)
    kept = values[~noise | first].view(ids.shape[0], -1)
    return torch.cat([kept, torch.full((ids.shape[0], 1), eos_id)], dim=1)


def corrupt(ids, noise_density: float, mean_span_length: float, sentinels, eos_id: int, generator) -> tuple:
    """(inputs, targets) of rows of one length: noise spans -> sentinels, and the complement (both ending in EOS)."""
    noise = random_spans_noise_mask(ids.shape[0], ids.shape[1], noise_density, mean_span_length, generator)
    return (noise_span_to_unique_sentinel(ids, noise, sentinels, eos_id),
            noise_span_to_unique_sentinel(ids, ~noise, sentinels, eos_id))


def sentinel_ids(tokenizer, objective: str) -> torch.Tensor:
    """The ids of <extra_id_0>, <extra_id_1>, ... as far as the tokenizer has them; refused when it has none."""
    vocab = tokenizer.get_vocab()
    sentinels = []
    while f"<extra_id_{len(sentinels)}>" in vocab:
        sentinels.append(vocab[f"<extra_id_{len(sentinels)}>"])
    if not sentinels:
        raise UserError(f"objective '{objective}' needs sentinel tokens <extra_id_0> ... in the tokenizer; add them "
                        f"with pretrain.data.tokenizer.ensure_special_tokens(tokenizer, ('sentinels',))")
    return torch.tensor(sentinels)


@dataclass
class SpanCorruptionOptions:
    noise_density: float = 0.15  # share of tokens dropped
    mean_span_length: float = 3.0  # mean length of a dropped span, in tokens

    def check(self):
        check_fraction("span", "noise_density", self.noise_density, allow_zero=False)
        if self.mean_span_length < 1:
            raise UserError(f"objective 'span': mean_span_length={self.mean_span_length} must be at least 1")


@register
class SpanCorruption(Objective):
    name = "span"
    title = "span corruption (T5)"
    hub_tag = "span-corruption"
    archs = ("encoder-decoder",)
    special_tokens = ("pad_token", "eos_token", "sentinels")
    perplexity = True
    loss_meaning = "cross-entropy on the dropped spans only, each behind its sentinel"
    cloze_overhead = 1  # ... </s>
    cloze_method = "`<extra_id_0>`, first target token"
    cloze_note = ("its sentinel stands for a span of about mean_span_length tokens, so one hidden token is a "
                  "narrower question than it trains on")
    Options = SpanCorruptionOptions
    document_aware = True

    def __init__(self, tokenizer, model_cfg, options=None, documents=False):
        super().__init__(tokenizer, model_cfg, options, documents)
        self.sentinel_ids = sentinel_ids(tokenizer, self.name)

    def block_length(self, seq_len):
        raw, _ = compute_input_and_target_lengths(seq_len, self.options.noise_density, self.options.mean_span_length)
        self._check_sentinels(raw)
        return raw

    def _check_sentinels(self, raw_length):
        _, spans = span_counts(raw_length, self.options.noise_density, self.options.mean_span_length)
        if spans > len(self.sentinel_ids):
            raise UserError(f"objective 'span': {raw_length} raw tokens make {spans} noise spans but the tokenizer "
                            f"has {len(self.sentinel_ids)} sentinels; use a shorter seq_len or more <extra_id_N>")

    def collate(self, blocks, generator):
        ids = as_blocks(blocks)
        batch, length = ids.shape
        if length < 2:
            raise ValueError("span corruption needs blocks of at least 2 tokens")
        self._check_sentinels(length)
        real = self.real_tokens(ids)
        if self.documents:
            return self._collate_documents(ids, real, generator)
        if not bool(real.all()):
            return self._collate_padded(ids, real.sum(dim=1), generator)
        inputs, labels = self._corrupt(ids, generator)
        start = torch.full((batch, 1), self.decoder_start_id)
        return {"input_ids": inputs, "decoder_input_ids": torch.cat([start, labels[:, :-1]], dim=1),
                "labels": labels}

    def _corrupt(self, ids, generator):
        o = self.options
        return corrupt(ids, o.noise_density, o.mean_span_length, self.sentinel_ids, self.eos_id, generator)

    def _collate_padded(self, ids, lengths, generator):
        """Rows with padding (data.tail pad): each corrupted over its real tokens, then everything right-padded."""
        pairs = []
        for row, n in zip(ids, lengths.tolist()):
            if n >= 2:
                inputs, labels = self._corrupt(row[None, :n], generator)
                pairs.append((inputs[0], labels[0]))
            else:  # one real token: nothing to drop
                pairs.append((torch.cat([row[:n], torch.tensor([self.eos_id])]), torch.tensor([self.eos_id])))
        width_in, width_out = max(len(i) for i, _ in pairs), max(len(t) for _, t in pairs)
        inputs = torch.full((len(pairs), width_in), self.pad_id)
        mask = torch.zeros((len(pairs), width_in), dtype=torch.long)
        labels = torch.full((len(pairs), width_out), -100)
        for r, (i, t) in enumerate(pairs):
            inputs[r, :len(i)], mask[r, :len(i)], labels[r, :len(t)] = i, 1, t
        start = torch.full((len(pairs), 1), self.decoder_start_id)
        previous = torch.cat([start, labels[:, :-1].masked_fill(labels[:, :-1] == -100, self.pad_id)], dim=1)
        return with_padding({"input_ids": inputs, "decoder_input_ids": previous, "labels": labels},
                            "attention_mask", mask)

    def _input_length(self, n: int) -> int:
        """Encoder tokens of a document whose text has n tokens (corrupted from 2 tokens on), its EOS included."""
        if n < 2:
            return n + 1
        return corrupted_lengths(n, self.options.noise_density, self.options.mean_span_length)[0]

    def _fit_documents(self, sizes: list, seq_len: int) -> list:
        """The documents' text lengths once their inputs fit seq_len: the last text cut to the longest that fits,
        dropped when not even one token does, and so on backwards. Input lengths depend on text lengths only (and
        never shrink as a text grows), so this needs no draw."""
        sizes = list(sizes)
        total = sum(self._input_length(n) for n in sizes)
        while total > seq_len:
            room = seq_len - (total - self._input_length(sizes[-1]))
            n = sizes[-1] - (total - seq_len)  # one token less per token too many, then step to the longest fit
            while n >= 1 and self._input_length(n) > room:
                n -= 1
            while 1 <= n < sizes[-1] and self._input_length(n + 1) <= room:
                n += 1
            if n < 1:
                sizes.pop()
            else:
                sizes[-1] = n
            total = sum(self._input_length(n) for n in sizes)
        return sizes

    def _collate_documents(self, ids, real, generator):
        """Each document corrupted on its own (see the module docstring), packed with segment ids."""
        o = self.options
        batch, length = ids.shape
        seq_len = corrupted_lengths(length, o.noise_density, o.mean_span_length)[0]
        eos = torch.tensor([self.eos_id])
        rows = []
        for r in range(batch):
            row = ids[r, :int(real[r].sum())]
            texts = [row[a:b - 1] if ends else row[a:b] for a, b, ends in self.documents_of(row)]
            texts = [t for t in texts if len(t)]  # a lone EOS (an empty document, or one the block cut) is left out
            sizes = self._fit_documents([len(t) for t in texts], seq_len)
            pairs = []
            for text, n in zip(texts, sizes):
                if n >= 2:
                    inputs, targets = self._corrupt(text[None, :n], generator)
                    pairs.append((inputs[0], targets[0]))
                else:  # nothing to drop
                    pairs.append((torch.cat([text[:n], eos]), eos))
            rows.append(pairs)
        return self.pack_examples(rows, seq_len)

    def loss(self, model, batch):
        keys = ("input_ids", "attention_mask", "decoder_input_ids", "segment_ids", "decoder_segment_ids")
        return predict(model, model(**model_inputs(batch, *keys)), batch["labels"])

    def cloze_batch(self, windows, positions, variant):
        """The word replaced by <extra_id_0> in the encoder input (... </s>); the decoder reads [start,
        <extra_id_0>] and predicts the first target token."""
        return self.sentinel_cloze(self.cloze_rows(windows, positions, variant))

    def cloze_rows(self, windows, positions, variant):
        """The cloze's encoder rows: each window with the hidden word replaced by <extra_id_0>, then </s>."""
        sentinel = int(self.sentinel_ids[0])
        return [r[:p] + [sentinel] + r[p + 1:] + [self.eos_id] for r, p in zip(cut(windows, positions, variant),
                                                                              positions)]

    def sentinel_cloze(self, encoder_rows):
        """The cloze batch of these encoder rows: the decoder reads [start, <extra_id_0>] and predicts the next."""
        sentinel = int(self.sentinel_ids[0])
        return self.seq2seq_cloze(encoder_rows, [[self.decoder_start_id, sentinel]] * len(encoder_rows),
                                  [1] * len(encoder_rows))

    def score_method(self, variant="word"):
        hole = "the token and the rest of its word" if variant == "word" else "the token"
        return f"`<extra_id_0>` over {hole} in the input, the decoder's `<extra_id_0>` then the token scored"

    def score_rows(self, ids, starts, variant="word", prefix=()):
        """Each token in turn: its hole replaced by <extra_id_0>, the decoder reads [start, <extra_id_0>] and
        predicts the token, as the cloze asks."""
        return span_rows(ids, starts, int(self.sentinel_ids[0]), self.decoder_start_id, self.eos_id, variant, prefix)
