"""Text infilling (BART): delete spans of words, leave one mask per span, reconstruct the whole text.

After fairseq's DenoisingDataset.add_whole_word_mask with BART's settings (span-poisson, replace_length=1):

- a block of seq_len - 2 tokens is framed as <s> block </s>; the framing tokens are never masked;
- mask_ratio of the words (word starts from the tokenizer, see base.word_start_table) are masked, in spans whose
  lengths (in words) are drawn from Poisson(poisson_lambda) until they cover the budget, the last one trimmed;
- each span becomes one token: <mask>, or with probability random_ratio a random non-special token;
- a zero-length span becomes an insertion: a <mask> (or random token) added at a random place, every one of them
  (as fairseq does); where they outnumber the tokens the masking removed the input grows past seq_len, and the
  batch is as wide as its longest input. At BART's poisson_lambda 3 that never happens; below 2 it does, and
  block_length refuses a model whose max_seq_len leaves no room for it;
- with permute_sentences, the block's sentences (ending in a token whose text ends with . ! ? or in EOS) are
  shuffled before masking, as BART's sentence permutation;
- labels are the original framed block; the decoder reads it shifted right behind the decoder start token
  (the model config's; BART: </s>, the tokenizer's EOS); inputs are right-padded with an attention_mask;
- the corpus's last block with data.tail pad is noised over its real tokens only; its padding is no target.

With documents on, each document of a block (its text without the trailing EOS) is framed and noised as its own
example, <s> text </s> (sentences permuted within it; a lone EOS is left out), and the examples are concatenated with segment_ids /
decoder_segment_ids (document k is segment k on both sides, -1 on padding); the decoder reads each framed text
behind its own decoder start token. Framing adds a token per document beyond the first, so if the labels would be
longer than without documents (seq_len), the last documents' texts are shortened, or dropped, until they fit;
what is cut is not trained on.

One deliberate difference from fairseq: spans are placed without overlapping (a uniformly random arrangement of
the spans among the unmasked words), so mask_ratio is the fraction actually masked; fairseq draws span starts
independently and overlapping spans mask about 0.26 for 0.3.
"""
import math
from dataclasses import dataclass

import torch

from models.errors import UserError

from .base import Objective, as_blocks, check_fraction, cut, model_inputs, predict, register, with_padding
from .scoring import infill_rows
from .words import word_start_table, word_starts


def span_lengths(num_words: int, poisson_lambda: float, generator) -> torch.Tensor:
    """Poisson span lengths (in words) drawn until they cover num_words, the last one trimmed to fit exactly."""
    rate = torch.full((max(num_words, 1),), float(poisson_lambda))
    lengths = torch.poisson(rate, generator=generator).long()
    while lengths.sum() < num_words:
        lengths = torch.cat([lengths, torch.poisson(rate, generator=generator).long()])
    total = lengths.cumsum(0)
    last = int((total >= num_words).nonzero()[0])
    lengths = lengths[:last + 1]
    lengths[last] = num_words - (total[last - 1] if last > 0 else 0)
    return lengths


def infill_noise(content, starts, mask_ratio, poisson_lambda, random_ratio, mask_id, random_tokens, generator):
    """Text infilling of one row. content: LongTensor [n]; starts: bool [n], True where a word begins.

    Returns (noised tokens, masked: bool [n] over content, span lengths in words including zero-length ones).
    `random_tokens(count)` draws replacement ids.
    """
    starts = starts.clone()
    starts[0] = True
    word_of = starts.cumsum(0) - 1
    num_words = int(word_of[-1]) + 1
    budget = math.ceil(num_words * mask_ratio)
    if budget == 0:
        return content, torch.zeros_like(starts), torch.zeros(0, dtype=torch.long)
    lengths = span_lengths(budget, poisson_lambda, generator)
    spans = lengths[lengths > 0]
    # a random arrangement of the spans among the unmasked words: choose which slots are spans
    slots = num_words - budget + len(spans)
    span_slot = torch.zeros(slots, dtype=torch.bool)
    span_slot[torch.randperm(slots, generator=generator)[:len(spans)]] = True
    slot_words = torch.ones(slots, dtype=torch.long)
    slot_words[span_slot] = spans
    first_word = slot_words.cumsum(0) - slot_words
    word_masked = span_slot.repeat_interleave(slot_words)
    word_span_start = torch.zeros(num_words, dtype=torch.bool)
    word_span_start[first_word[span_slot]] = True

    masked = word_masked[word_of]
    span_start = word_span_start[word_of] & starts
    replacement = torch.where(torch.rand(len(spans), generator=generator) < random_ratio,
                              random_tokens(len(spans)), mask_id)
    values = content.clone()
    values[span_start] = replacement
    noised = values[~masked | span_start]

    inserts = int((lengths == 0).sum())
    if inserts > 0:
        total = len(noised) + inserts
        at = torch.zeros(total, dtype=torch.bool)
        at[torch.randperm(total, generator=generator)[:inserts]] = True
        with_inserts = torch.empty(total, dtype=torch.long)
        with_inserts[~at] = noised
        with_inserts[at] = torch.where(torch.rand(inserts, generator=generator) < random_ratio,
                                       random_tokens(inserts), mask_id)
        noised = with_inserts
    return noised, masked, lengths


@dataclass
class TextInfillingOptions:
    mask_ratio: float = 0.3  # share of words masked
    poisson_lambda: float = 3.0  # mean span length, in words
    random_ratio: float = 0.1  # share of spans replaced by a random token instead of <mask>
    permute_sentences: bool = False  # shuffle the sentences of a block before masking
    whole_word: bool = True  # spans of words (False: of tokens)

    def check(self):
        check_fraction("infill", "mask_ratio", self.mask_ratio)
        check_fraction("infill", "random_ratio", self.random_ratio, allow_one=True)
        if self.poisson_lambda <= 0:
            raise UserError(f"objective 'infill': poisson_lambda={self.poisson_lambda} must be positive")


@register
class TextInfilling(Objective):
    name = "infill"
    title = "text infilling (BART)"
    hub_tag = "text-infilling"
    archs = ("encoder-decoder",)
    special_tokens = ("pad_token", "eos_token", "bos_token", "mask_token")
    perplexity = True
    loss_meaning = ("cross-entropy of reconstructing the whole text, most of which its input shows (so its loss "
                    "is low and its accuracy high by construction)")
    cloze_overhead = 2  # <s> ... </s>
    cloze_method = "`<mask>` infilling, teacher-forced decoder"
    cloze_note = ("its `<mask>` stands for a span of 0..n words, so one hidden token is a narrower question than it "
                  "trains on (it is not told that exactly one is missing); its decoder reads the original left "
                  "context, which its encoder sees too: no extra information, another route to the answer")
    Options = TextInfillingOptions
    document_aware = True

    def __init__(self, tokenizer, model_cfg, options=None, documents=False):
        super().__init__(tokenizer, model_cfg, options, documents)
        o = self.options
        self.starts_word = word_start_table(tokenizer) if o.whole_word else torch.ones(self.vocab_size,
                                                                                     dtype=torch.bool)
        self.ends_sentence = sentence_end_table(tokenizer) if o.permute_sentences else None

    def conventional_decoder_start(self) -> int:
        return self.eos_id  # BART's convention

    def block_length(self, seq_len):
        if seq_len < 3:
            raise UserError(f"objective 'infill' needs seq_len >= 3 (<s>, text, </s>), got {seq_len}")
        room = self.model_cfg.max_seq_len - seq_len
        growth = insertion_growth(seq_len - 2, self.options.mask_ratio, self.options.poisson_lambda)
        if growth > room:
            raise UserError(f"objective 'infill': at poisson_lambda={self.options.poisson_lambda} zero-length spans "
                            f"insert up to about {growth} masks more than the masking removes from a block of "
                            f"{seq_len}; raise model.max_seq_len to at least {seq_len + growth} or use "
                            f"poisson_lambda >= 2")
        return seq_len - 2

    def _noise(self, content, special, generator):
        """The noised text of one example (sentences permuted first when asked)."""
        o = self.options
        if o.permute_sentences:
            order = permutation_of_sentences(self.ends_sentence[content], generator)
            content, special = content[order], special[order]
        noised, _, _ = infill_noise(content, word_starts(content, self.starts_word, special),
                                    o.mask_ratio, o.poisson_lambda, o.random_ratio, self.mask_id,
                                    lambda n: self._random_tokens((n,), generator), generator)
        return noised

    def _check_width(self, width, length):
        if width > max(length + 2, self.model_cfg.max_seq_len):  # grown by insertions past the model's positions
            raise UserError(f"objective 'infill': insertions made an input of {width} tokens, longer than "
                            f"model.max_seq_len {self.model_cfg.max_seq_len}; raise it or use poisson_lambda >= 2")

    def collate(self, blocks, generator):
        ids = as_blocks(blocks)
        batch, length = ids.shape
        real = self.real_tokens(ids)  # padding (data.tail pad) is neither noised nor a target
        special = torch.isin(ids, self.special_ids)
        if self.documents:
            return self._collate_documents(ids, real, special, generator)
        lengths = real.sum(dim=1).tolist()
        noised_rows = []
        for row in range(batch):
            content, row_special = ids[row, :lengths[row]], special[row, :lengths[row]]
            noised_rows.append(self._noise(content, row_special, generator))
        width = max(length, max(len(r) for r in noised_rows)) + 2
        self._check_width(width, length)
        inputs = torch.full((batch, width), self.pad_id)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, length + 2), -100)
        for row, noised in enumerate(noised_rows):
            inputs[row, 0], inputs[row, len(noised) + 1] = self.bos_id, self.eos_id
            inputs[row, 1:len(noised) + 1] = noised
            attention_mask[row, :len(noised) + 2] = 1
            n = lengths[row]
            labels[row, 0], labels[row, 1:n + 1], labels[row, n + 1] = self.bos_id, ids[row, :n], self.eos_id
        start = torch.full((batch, 1), self.decoder_start_id)
        previous = labels[:, :-1].masked_fill(labels[:, :-1] == -100, self.pad_id)
        return with_padding({"input_ids": inputs, "decoder_input_ids": torch.cat([start, previous], dim=1),
                             "labels": labels}, "attention_mask", attention_mask)

    def _collate_documents(self, ids, real, special, generator):
        """Each document framed and noised on its own (see the module docstring), packed with segment ids; labels
        at most length + 2 wide, as without documents."""
        batch, length = ids.shape
        width_out = length + 2
        rows = []
        for r in range(batch):
            row = ids[r, :int(real[r].sum())]
            spans = [(a, b - 1 if ends else b) for a, b, ends in self.documents_of(row)]  # the texts
            spans = [(a, b) for a, b in spans if b > a]  # a lone EOS (an empty document, or one cut) is left out
            excess = sum(b - a + 2 for a, b in spans) - width_out
            while excess > 0:  # shorten the last text, drop it when nothing would be left
                a, b = spans[-1]
                if b - a - excess >= 1:
                    spans[-1], excess = (a, b - excess), 0
                else:
                    spans.pop()
                    excess -= b - a + 2
            examples = []
            for a, b in spans:
                text = row[a:b]
                examples.append((self._framed(self._noise(text, special[r, a:b], generator)), self._framed(text)))
            rows.append(examples)
        width = max([length + 2] + [sum(len(i) for i, _ in examples) for examples in rows])
        self._check_width(width, length)
        return self.pack_examples(rows, width, width_out)

    def _framed(self, text):
        return torch.cat([torch.tensor([self.bos_id]), text, torch.tensor([self.eos_id])])

    def loss(self, model, batch):
        keys = ("input_ids", "attention_mask", "decoder_input_ids", "segment_ids", "decoder_segment_ids")
        return predict(model, model(**model_inputs(batch, *keys)), batch["labels"])

    def cloze_batch(self, windows, positions, variant):
        """The word replaced by <mask> in the encoder input (<s> ... </s>); the decoder reads the original text
        teacher-forced up to the hole and predicts the next token."""
        bos = self.bos_id if self.bos_id is not None else self.tokenizer.cls_token_id
        encoder = [[bos] + r[:p] + [self.mask_id] + r[p + 1:] + [self.eos_id]
                   for r, p in zip(cut(windows, positions, variant), positions)]
        decoder = [[self.decoder_start_id, bos] + r[:p] for r, p in zip(windows, positions)]
        return self.seq2seq_cloze(encoder, decoder, [p + 1 for p in positions])

    def score_method(self, variant="word"):
        hole = "the token and the rest of its word" if variant == "word" else "the token"
        return f"`<mask>` over {hole} in the input, the decoder's reconstruction scored at the token"

    def score_rows(self, ids, starts, variant="word"):
        """Each token in turn: its hole replaced by <mask> in <s> ... </s>, the decoder reads the original text
        teacher-forced up to the token and predicts it, as the cloze asks."""
        bos = self.bos_id if self.bos_id is not None else self.tokenizer.cls_token_id
        return infill_rows(ids, starts, self.mask_id, bos, self.eos_id, self.decoder_start_id, variant)


def insertion_growth(words: int, mask_ratio: float, poisson_lambda: float, rows: int = 200) -> int:
    """How many tokens insertions may add beyond what the masking of `words` words removes (the most over `rows`
    seeded draws of the span lengths; 0 when they always fit). Words stand in for tokens, which only removes more."""
    budget = math.ceil(words * mask_ratio)
    if budget == 0:
        return 0
    g = torch.Generator().manual_seed(0)
    most = 0
    for _ in range(rows):
        lengths = span_lengths(budget, poisson_lambda, g)
        most = max(most, int((lengths == 0).sum()) - (budget - int((lengths > 0).sum())))
    return most


def sentence_end_table(tokenizer) -> torch.Tensor:
    """Bool over the vocabulary: the token ends a sentence (its text ends with . ! or ?, or it is EOS)."""
    texts = tokenizer.backend_tokenizer.decode_batch([[v] for v in range(len(tokenizer))], skip_special_tokens=False)
    ends = torch.tensor([t.rstrip().endswith((".", "!", "?")) for t in texts], dtype=torch.bool)
    if tokenizer.eos_token_id is not None:
        ends[tokenizer.eos_token_id] = True
    return ends


def permutation_of_sentences(ends: torch.Tensor, generator) -> torch.Tensor:
    """Index order that shuffles the sentences of a row (a trailing fragment counts as a sentence)."""
    ends = ends.clone()
    ends[-1] = True
    stops = ends.nonzero().squeeze(1) + 1
    begins = torch.cat([stops.new_zeros(1), stops[:-1]])
    order = torch.randperm(len(stops), generator=generator)
    return torch.cat([torch.arange(begins[i], stops[i]) for i in order.tolist()])
