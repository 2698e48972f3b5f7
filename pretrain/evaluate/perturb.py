"""Minimal pairs from any corpus, without labels: a held-out sentence (acceptable, as written) against a seeded
perturbation of it. Built on whitespace words, not tokens, so every model gets the same pairs for the same text and
seed whatever its tokenizer.

    pairs = corpus_pairs(texts, n=400, seed=0)   # Pair(good, bad, group=perturbation), in equal shares

Perturbations (each checked to really change the sentence; a sentence where none can is skipped):
    adjacent_swap  two adjacent, different words swapped
    replacement    one word replaced by the word of nearest corpus frequency (its neighbour in frequency order)
    duplication    one word repeated
    half_swap      the two halves of the sentence swapped
The final punctuation stays at the end. Sentences are split at . ! ? followed by whitespace and kept with 6 to 30
words, mostly alphabetic.
"""
from __future__ import annotations

import random
import re
from collections import Counter

from .pairs import Pair

PERTURBATIONS = ("adjacent_swap", "replacement", "duplication", "half_swap")
_SPLIT = re.compile(r"(?<=[.!?])\s+")
_END = re.compile(r"[.!?]+$")


def sentences(texts, min_words: int = 6, max_words: int = 30) -> list[str]:
    """The texts' sentences that look like prose, in order, each once."""
    seen, out = set(), []
    for text in texts:
        for s in _SPLIT.split(" ".join(text.split())):
            words = s.split()
            alpha = sum(w.strip(".,;:!?\"'()").isalpha() for w in words)
            if min_words <= len(words) <= max_words and alpha >= 0.8 * len(words) and s not in seen:
                seen.add(s)
                out.append(s)
    return out


def _strip_end(words: list[str]) -> tuple[list[str], str]:
    match = _END.search(words[-1])
    if not match or match.start() == 0:
        return words, ""
    return words[:-1] + [words[-1][:match.start()]], match.group()


def perturb(sentence: str, kind: str, rng: random.Random, neighbours: dict[str, str]) -> str | None:
    """The sentence perturbed by `kind` (rng picks where), or None when it cannot change it."""
    words, end = _strip_end(sentence.split())
    n = len(words)
    if kind == "adjacent_swap":
        spots = [i for i in range(n - 1) if words[i] != words[i + 1]]
        if not spots:
            return None
        i = rng.choice(spots)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == "replacement":
        spots = [i for i in range(n) if words[i].lower() in neighbours]
        if not spots:
            return None
        i = rng.choice(spots)
        words[i] = neighbours[words[i].lower()]
    elif kind == "duplication":
        i = rng.randrange(n)
        words.insert(i, words[i])
    elif kind == "half_swap":
        m = n // 2
        words = words[m:] + words[:m]
    else:
        raise ValueError(f"unknown perturbation {kind!r}")
    bad = " ".join(words) + end
    return bad if bad != sentence else None


def frequency_neighbours(texts) -> dict[str, str]:
    """Each alphabetic lower-case word -> the next word in (frequency descending, word) order (the last -> the one
    before it): a word the corpus uses about as often, a stand-in for the same frequency band."""
    counts = Counter(w for t in texts for w in t.lower().split() if w.isalpha())
    order = sorted(counts, key=lambda w: (-counts[w], w))
    if len(order) < 2:
        return {}
    out = {w: order[k + 1] for k, w in enumerate(order[:-1])}
    out[order[-1]] = order[-2]
    return out


def corpus_pairs(texts, n: int = 400, seed: int = 0) -> list[Pair]:
    """n pairs (n / 4 per perturbation, fewer when the text is short) from the sentences of `texts`."""
    texts = list(texts)
    pool = sentences(texts)
    neighbours = frequency_neighbours(texts)
    rng = random.Random(f"pairs-{seed}")
    order = list(range(len(pool)))
    rng.shuffle(order)
    per_kind = max(1, n // len(PERTURBATIONS))
    made = {kind: [] for kind in PERTURBATIONS}
    for k in order:  # each sentence goes to the kind with fewest pairs that can change it
        for kind in sorted((kind for kind in PERTURBATIONS if len(made[kind]) < per_kind),
                           key=lambda kind: len(made[kind])):
            bad = perturb(pool[k], kind, rng, neighbours)
            if bad is not None:
                made[kind].append(Pair(pool[k], bad, kind))
                break
    return [pair for kind in PERTURBATIONS for pair in made[kind]]
