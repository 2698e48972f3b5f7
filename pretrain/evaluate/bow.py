"""The bag-of-words baseline: what a linear model on the words alone scores on a task, with no pretraining at all.

    bag_of_words(task, ProbeRecipe()) -> {"validation": scores, "test": scores, "l2": ..., "vocabulary": n}

A model whose probe or fine-tuning does not beat this line has learned less about the task than word counts tell.
Features: the presence (0/1) of each lower-cased word (`\\w+`) of the training split, second texts' words kept
apart; the same logistic regression as the probe (pretrain/evaluate/finetune.py: standardized features, L2 chosen
on validation from the probe's grid), so the two lines differ only in the features.
"""
from __future__ import annotations

import re
from collections import Counter

import torch

from .finetune import linear_probe
from .recipe import ProbeRecipe

WORD = re.compile(r"\w+")
MAX_VOCABULARY = 20_000  # the most frequent training words (ties by the word itself: deterministic)


def words(text: str, pair: str | None) -> set[str]:
    found = set(WORD.findall(text.lower()))
    if pair is not None:
        found |= {f"2:{w}" for w in WORD.findall(pair.lower())}
    return found


def _split_words(part: dict) -> list[set[str]]:
    pairs = part["text_pair"] or [None] * len(part["text"])
    return [words(t, p) for t, p in zip(part["text"], pairs)]


def bag_of_words(task, recipe: ProbeRecipe | None = None) -> dict:
    recipe = recipe or ProbeRecipe()
    per_split = {split: _split_words(part) for split, part in task.splits.items()}
    counts = Counter(w for found in per_split["train"] for w in found)
    vocabulary = sorted(counts, key=lambda w: (-counts[w], w))[:MAX_VOCABULARY]
    index = {w: i for i, w in enumerate(vocabulary)}
    feats = {}
    for split, rows in per_split.items():
        x = torch.zeros(len(rows), len(vocabulary))
        for i, found in enumerate(rows):
            x[i, [index[w] for w in found if w in index]] = 1.0
        feats[split] = x
    return {**linear_probe(feats, task, recipe), "vocabulary": len(vocabulary)}
