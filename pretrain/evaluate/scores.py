"""Classification scores and their spread over seeds.

    scores(predicted, gold, num_labels) -> {"accuracy", "macro_f1"[, "mcc"]}   (mcc: two classes only)
    spread([per-seed dicts]) -> {metric: {"median", "min", "max"}}
"""
from __future__ import annotations

import math
import statistics

import torch


def scores(predicted, gold, num_labels: int) -> dict:
    """Accuracy, macro-F1 (a class never predicted nor present counts as neither) and, for two classes, Matthews
    correlation (0 when a row or column of the confusion matrix is empty)."""
    p, g = torch.as_tensor(predicted, dtype=torch.long), torch.as_tensor(gold, dtype=torch.long)
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.float64)
    confusion.index_put_((g, p), torch.ones(len(g), dtype=torch.float64), accumulate=True)
    tp = confusion.diag()
    predicted_n, gold_n = confusion.sum(0), confusion.sum(1)
    present = (predicted_n + gold_n) > 0
    f1 = torch.where(present, 2 * tp / (predicted_n + gold_n).clamp(min=1), torch.zeros_like(tp))
    out = {"accuracy": float(tp.sum() / max(len(g), 1)), "macro_f1": float(f1[present].mean()) if present.any()
           else 0.0}
    if num_labels == 2:
        (tn, fp), (fn, tp1) = confusion.tolist()
        denominator = math.sqrt((tp1 + fp) * (tp1 + fn) * (tn + fp) * (tn + fn))
        out["mcc"] = (tp1 * tn - fp * fn) / denominator if denominator else 0.0
    return out


def spread(per_seed: list[dict]) -> dict:
    """Median, min and max of every metric over the seeds' score dicts."""
    keys = [k for k in per_seed[0] if isinstance(per_seed[0][k], (int, float))] if per_seed else []
    return {k: {"median": statistics.median(d[k] for d in per_seed), "min": min(d[k] for d in per_seed),
                "max": max(d[k] for d in per_seed)} for k in keys}
