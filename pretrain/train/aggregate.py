"""The one definition of every logged number: how an objective's per-batch metrics add up over gradient-accumulation
micro-batches, processes and validation batches. Training (Trainer.train_step) and validation
(evaluation.validation_metrics) both use MetricSums, so a metric logged by both on the same batches is the same
number.

Kinds, decided per key by objectives.base.metric_weight from the objective's declarations:
- a count ("n_predicted", "P_n_predicted", any count another metric is declared a mean over): summed;
- a mean over a count ("loss" and "accuracy" over "n_predicted", "P_loss" over "P_n_predicted", ELECTRA's
  "disc_auc" over its "disc_pairs"): the sum of value x count over every batch, divided by the summed count (left
  out when that is zero), i.e. the mean over all the targets the batches hold, not the mean of per-batch means;
- anything else: the plain mean over batches.
Sums stay on the device as tensors (no host synchronization per micro-batch) and reduce across processes as one
vector summed.
"""
from __future__ import annotations

import torch

from objectives.base import is_count, metric_weight

FIRST = ("loss", "accuracy", "n_predicted")  # the order rows show them in


class MetricSums:
    """Running sums of one objective's metrics; `declared` is its metric_counts (metric -> the count it averages
    over, beyond the naming convention)."""

    def __init__(self, declared: dict | None = None):
        self.declared = dict(declared or {})
        self.sums: dict = {}
        self.batches = 0.0

    def add(self, metrics: dict, scale: float = 1.0):
        """One batch's metrics (0-dim tensors or numbers). scale 0: a batch that only fixes the keys (a process
        with no batch of its own still reduces the same vector as the others)."""
        for key, value in metrics.items():
            value = _as_float(value)
            weight = metric_weight(key, metrics, self.declared)
            term = value * _as_float(metrics[weight]) if weight else value
            term = term * scale if scale != 1.0 else term
            self.sums[key] = self.sums[key] + term if key in self.sums else term
        self.batches += scale

    def keys(self) -> list[str]:
        return sorted(self.sums)

    def vector(self, device=None) -> torch.Tensor:
        """The sums in keys() order, then the number of batches: what processes all-reduce (summed)."""
        device = device if device is not None else _device(self.sums)
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64  # MPS has no float64
        values = [self.sums[k] for k in self.keys()] + [self.batches]
        return torch.stack([torch.as_tensor(v, device=device).to(dtype).reshape(()) for v in values])

    def read(self, vector: torch.Tensor | None = None) -> dict:
        """The metrics from summed sums (this process's own when `vector` is None), FIRST keys first."""
        vector = self.vector() if vector is None else vector
        keys = self.keys()
        values = vector.tolist() if vector.numel() else []
        sums, batches = dict(zip(keys, values[:-1])), values[-1] if values else 0.0
        counts = {metric_weight(k, sums, self.declared) for k in keys} | {k for k in keys if is_count(k)}
        out = {}
        for key in sorted(keys, key=lambda k: (k not in FIRST, FIRST.index(k) if k in FIRST else 0, k)):
            weight = metric_weight(key, sums, self.declared)
            if key in counts:
                out[key] = int(round(sums[key]))
            elif weight is not None:
                if sums[weight]:
                    out[key] = sums[key] / sums[weight]
            elif batches:
                out[key] = sums[key] / batches
        return out


def _as_float(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32 if value.device.type == "mps" else torch.float64)
    return float(value)


def _device(sums: dict):
    for value in sums.values():
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")
