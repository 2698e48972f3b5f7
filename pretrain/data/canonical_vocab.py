"""Make what the `tokenizers` trainers learn a function of the corpus alone, not of the process that trained it.

The WordPiece and Unigram trainers of `tokenizers` (0.23) iterate Rust hash maps whose hasher (ahash) is seeded
from the OS at random in every process, so the same corpus gives another vocabulary in another process, whatever
TOKENIZERS_PARALLELISM or PYTHONHASHSEED say. Byte-level BPE is not affected: its symbols all come from the sorted
byte alphabet.

- WordPiece is the BPE trainer with "##" continuation symbols. `BpeTrainer::tokenize_words` gives each "##c" its id
  the first time it meets it while iterating the word counts in hash order, and merges of equal count are chosen
  by symbol id, so the order of the "##c" ids decides ties: merges, hence vocabulary entries, differ. Reserving
  the alphabet and every "##c" up front, in sorted order, as trainer special tokens leaves no id to hash order;
  `wordpiece_symbols` finds them in one cheap pass over the raw text (a superset: a "##c" no word continues with
  stays unused).
- Unigram sums its E-step's expected counts over the words in hash order (float sums in another order: scores
  differ in their last bits, ~1e-11 after EM), gives the characters EM dropped the scores min + k * 1e-4 in hash
  order, and keeps equal scores in hash order. `rescored_unigram` re-derives every score from integers: how often
  the trained model's Viterbi segmentation of the training text uses each piece (a final hard-EM step, counted by
  the tokenizer itself), then orders pieces by (score, piece). The counts stay put under far more noise than EM
  leaves (relative 1e-7 on the built-in corpus) and under any order of equal or dropped characters' scores.
  The pieces themselves are the trainer's: its seeds are sorted on a total key, and its pruning (each EM round,
  then the cut to vocab_size in the last pruning's loss order) depends on float noise only where two pruning
  losses tie to ~1e-11 at a cut, which no measured training has hit (docs/reproducibility.md).
"""
from __future__ import annotations

import json
import math
import string
import unicodedata

import numpy as np
from tokenizers import Tokenizer

CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))  # BertNormalizer pads these with spaces


def _removed(c: str) -> bool:
    """A character BertNormalizer + BertPreTokenizer drop: whitespace, control / format / unassigned."""
    return c.isspace() or unicodedata.category(c)[0] == "C" or c == "\ufffd"


def _never_continues(c: str) -> bool:
    """A character they never leave inside a word: removed, punctuation or CJK (isolated)."""
    return (_removed(c) or unicodedata.category(c)[0] == "P" or c in string.punctuation
            or any(a <= ord(c) <= b for a, b in CJK_RANGES))


def wordpiece_symbols(batches, prefix: str = "##") -> list[str]:
    """The texts' characters in code-point order (the order the BPE trainer gives its alphabet), then
    `prefix + c`, sorted, for every character c that can continue a word: one of the orders the trainer itself
    may produce, always the same."""
    chars = set()
    for batch in batches:
        chars.update(*batch)
    chars = sorted(chars)
    return [c for c in chars if not _removed(c)] + [prefix + c for c in chars if not _never_continues(c)]


def without_added_tokens(tok: Tokenizer, tokens) -> Tokenizer:
    """`tok` with `tokens` removed from its added tokens (they stay in the model's vocabulary)."""
    drop = set(tokens)
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in drop]
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def rescored_unigram(tok: Tokenizer, batches, n_special: int) -> Tokenizer:
    """`tok` (a trained Unigram) with each piece's score log(count / total) of its Viterbi count over `batches`
    (unused pieces: log(0.5 / total), below every used one), the special tokens first as trained, then the pieces
    by descending score, ties by the piece's text."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    counts = np.zeros(len(vocab), np.int64)
    for batch in batches:
        ids = [i for e in tok.encode_batch(list(batch), add_special_tokens=False) for i in e.ids]
        counts += np.bincount(np.asarray(ids, np.int64), minlength=len(vocab))
    log_total = math.log(max(int(counts[n_special:].sum()), 1))
    pieces = [(piece, math.log(max(int(n), 0.5)) - log_total)
              for (piece, _), n in zip(vocab[n_special:], counts[n_special:])]
    pieces.sort(key=lambda p: (-p[1], p[0]))
    data["model"]["vocab"] = vocab[:n_special] + [list(p) for p in pieces]
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
