"""How a model scores a whole sentence (zero-shot minimal pairs): the rows a model reads and the tokens whose
log-probabilities are summed. Plain functions of token ids, so an objective (Objective.score_rows) and a transformers
model chosen by its type (pretrain/evaluate/score.py) frame a sentence the same way.

A sentence is scored as the sum over its tokens of log p(token | what the model may see):
    causal_rows   decoders: one row, [start] + ids, every token predicted from the tokens before it;
    pll_rows      MLM encoders: pseudo-log-likelihood, one row per token with a hole at it. The hole is the token
                  and the rest of its word to the right ("word": PLL-word-l2r, Kauf & Ivanova 2023, the default), or
                  the token alone ("token": Salazar et al. 2020);
    span_rows     span corruption: the hole replaced by one sentinel in the encoder input, the decoder reads
                  [start, sentinel] and its next token is scored;
    infill_rows   text infilling: the hole replaced by one mask token, the decoder reconstructs the text
                  teacher-forced and is scored at the hole's first token;
    prefix_rows   prefix LM: the encoder reads the first token, the decoder scores the rest.
"""
from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("word", "token")  # the hole of a pseudo-log-likelihood: the token and the rest of its word, or itself


@dataclass(frozen=True)
class ScoreRow:
    """One model input and the (position, token) pairs of its output whose log-probabilities count."""
    input_ids: tuple
    positions: tuple
    targets: tuple
    decoder_input_ids: tuple | None = None


def hole_end(starts: list[bool], i: int, variant: str) -> int:
    """End (exclusive) of the hole at token i: i + 1 ("token"), or the next word start after i ("word")."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown scoring variant {variant!r}; use one of {VARIANTS}")
    j = i + 1
    if variant == "word":
        while j < len(starts) and not starts[j]:
            j += 1
    return j


def causal_rows(ids: list[int], start: int) -> list[ScoreRow]:
    n = len(ids)
    return [ScoreRow(tuple([start] + ids[:-1]), tuple(range(n)), tuple(ids))]


def pll_rows(ids: list[int], starts: list[bool], mask_id: int, variant: str, prefix=(), suffix=()) -> list[ScoreRow]:
    prefix, suffix, rows = list(prefix), list(suffix), []
    for i, token in enumerate(ids):
        j = hole_end(starts, i, variant)
        row = prefix + ids[:i] + [mask_id] * (j - i) + ids[j:] + suffix
        rows.append(ScoreRow(tuple(row), (len(prefix) + i,), (token,)))
    return rows


def span_rows(ids: list[int], starts: list[bool], sentinel: int, start: int, eos: int, variant: str,
              prefix=()) -> list[ScoreRow]:
    rows = []
    for i, token in enumerate(ids):
        j = hole_end(starts, i, variant)
        row = list(prefix) + ids[:i] + [sentinel] + ids[j:] + [eos]
        rows.append(ScoreRow(tuple(row), (1,), (token,), (start, sentinel)))
    return rows


def infill_rows(ids: list[int], starts: list[bool], mask_id: int, bos: int, eos: int, start: int,
                variant: str) -> list[ScoreRow]:
    rows = []
    for i, token in enumerate(ids):
        j = hole_end(starts, i, variant)
        row = [bos] + ids[:i] + [mask_id] + ids[j:] + [eos]
        rows.append(ScoreRow(tuple(row), (i + 1,), (token,), tuple([start, bos] + ids[:i])))
    return rows


def prefix_rows(ids: list[int], start: int) -> list[ScoreRow]:
    rest = ids[1:]
    if not rest:
        return []
    return [ScoreRow(tuple(ids[:1]), tuple(range(len(rest))), tuple(rest), tuple([start] + rest[:-1]))]
