"""Fine-tune or probe one model on one task, and score it (recipes: pretrain/evaluate/recipe.py).

    fine_tune(backbone, task, recipe, pretrained=True, seed=0, progress=None) -> {"validation": scores, "test": ...}
    probe(backbone, task, recipe, pretrained=True, seed=0) -> {"validation": ..., "test": ..., "l2": ...}
    (pooling="encoder" for either: an encoder-decoder read through its encoder's mean state)
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .classifier import Backbone, classifier, encode, pad, pooled_features
from .recipe import FinetuneRecipe, ProbeRecipe
from .scores import scores


def _encoded(backbone: Backbone, task, split: str, max_length: int) -> list[list[int]]:
    part = task.splits[split]
    return encode(backbone, part["text"], part["text_pair"], max_length)


def _batches(lengths: list[int], size: int, generator: torch.Generator | None = None):
    """Batches of indices of examples of similar length (little padding): in length order for inference; for
    training a seeded shuffle, sorted by length within windows of 50 batches, the batches then shuffled
    (transformers' group_by_length)."""
    n = len(lengths)
    if generator is None:
        order = sorted(range(n), key=lambda i: lengths[i])
        yield from (order[i:i + size] for i in range(0, n, size))
        return
    order = torch.randperm(n, generator=generator).tolist()
    window = 50 * size
    order = [i for w in range(0, n, window) for i in sorted(order[w:w + window], key=lambda i: lengths[i])]
    batches = [order[i:i + size] for i in range(0, n, size)]
    for b in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[b]


@torch.no_grad()
def _predict(backbone: Backbone, model, rows: list[list[int]], batch_size: int) -> list[int]:
    model.eval()
    out = [0] * len(rows)
    for idx in _batches([len(r) for r in rows], batch_size):
        for i, label in zip(idx, model(**pad(backbone, [rows[i] for i in idx])).logits.argmax(-1).tolist()):
            out[i] = label
    return out


def _optimizer(model, recipe: FinetuneRecipe):
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=recipe.lr, fused=True)


def fine_tune(backbone: Backbone, task, recipe: FinetuneRecipe, pretrained: bool = True, seed: int = 0,
              progress=None, pooling: str = "native") -> dict:
    """Full fine-tuning from the pretrained weights (or from a random init drawn with `seed`); scores on the
    validation and test splits after the last epoch. progress: a tqdm-like bar advanced once per step, or None."""
    start = time.perf_counter()
    model = classifier(backbone, task.num_labels, pretrained, seed, pooling)
    rows = _encoded(backbone, task, "train", recipe.max_length)
    labels, lengths = torch.tensor(task.splits["train"]["label"]), [len(r) for r in rows]
    steps = recipe.epochs * math.ceil(len(rows) / recipe.batch_size)
    warmup = max(1, round(recipe.warmup_ratio * steps))
    optimizer = _optimizer(model, recipe)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(recipe.epochs):
        for idx in _batches(lengths, recipe.batch_size, generator):
            logits = model(**pad(backbone, [rows[i] for i in idx])).logits
            loss = F.cross_entropy(logits.float(), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if progress is not None:
                progress.update(1)
    result = {split: scores(_predict(backbone, model, _encoded(backbone, task, split, recipe.max_length),
                                     recipe.batch_size * 2), task.splits[split]["label"], task.num_labels)
              for split in ("validation", "test") if split in task.splits}
    result["final_train_loss"] = sum(losses[-10:]) / max(1, len(losses[-10:]))
    result["steps"], result["seconds"] = steps, time.perf_counter() - start
    return result


@torch.no_grad()
def features(backbone: Backbone, model, rows: list[list[int]], batch_size: int) -> torch.Tensor:
    model.eval()
    order, parts = [], []
    for idx in _batches([len(r) for r in rows], batch_size):
        order += idx
        parts.append(pooled_features(backbone, model, pad(backbone, [rows[i] for i in idx])).float())
    out = torch.empty(len(rows), parts[0].shape[1])
    out[torch.tensor(order)] = torch.cat(parts)
    return out


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1)], 1)


def _fit(x: torch.Tensor, y: torch.Tensor, num_labels: int, l2: float, max_iter: int) -> torch.Tensor:
    """Multinomial logistic regression (weights with a bias row) by full-batch L-BFGS; convex, deterministic."""
    x = _with_bias(x)
    w = torch.zeros(x.shape[1], num_labels, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


def probe(backbone: Backbone, task, recipe: ProbeRecipe, pretrained: bool = True, seed: int = 0,
          model=None, pooling: str = "native") -> dict:
    """A linear probe on the frozen backbone's pooled features; the backbone's weights are not changed."""
    start = time.perf_counter()
    model = model if model is not None else classifier(backbone, task.num_labels, pretrained, seed, pooling)
    feats = {split: features(backbone, model, _encoded(backbone, task, split, recipe.max_length), recipe.batch_size)
             for split in task.splits}
    result = linear_probe(feats, task, recipe)
    result["seconds"] = time.perf_counter() - start
    return result


def linear_probe(feats: dict, task, recipe: ProbeRecipe) -> dict:
    """A logistic regression on fixed features per split ({split: [n, d]}): standardized with the training split's
    mean and deviation, its L2 strength chosen on the validation split (train when there is none, never test),
    scored on validation and test."""
    mean, std = feats["train"].mean(0), feats["train"].std(0).clamp(min=1e-6)
    feats = {s: (f - mean) / std for s, f in feats.items()}
    y = torch.tensor(task.splits["train"]["label"])
    choose = "validation" if "validation" in task.splits else "train"
    best = None
    for l2 in recipe.l2_grid:
        w = _fit(feats["train"], y, task.num_labels, l2, recipe.max_iter)
        predicted = (_with_bias(feats[choose]) @ w).argmax(-1)
        acc = scores(predicted, task.splits[choose]["label"], task.num_labels)["accuracy"]
        if best is None or acc > best[0]:
            best = (acc, l2, w)
    _, l2, w = best
    result = {split: scores((_with_bias(feats[split]) @ w).argmax(-1),
                            task.splits[split]["label"], task.num_labels)
              for split in ("validation", "test") if split in task.splits}
    result["l2"] = l2
    return result
