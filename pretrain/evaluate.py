"""Validation metrics of a model on held-out blocks: loss, accuracy (both weighted by the number of predicted
tokens), and perplexity where every target token is predicted left to right. Sharded over processes."""
from __future__ import annotations

import math

import torch

from .data_order import generator, get_blocks

PERPLEXITY_OBJECTIVES = ("clm", "span", "infill")


class ModelHandle:
    """What objectives receive: calling it runs the (possibly DDP-wrapped) forward; attributes such as
    logits / lm_loss / encode / decode / config come from the unwrapped model."""

    def __init__(self, wrapped, module):
        self._wrapped, self._module = wrapped, module

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)


@torch.no_grad()
def evaluate(module, objective, val_blocks, batch_size: int, seed: int, max_batches: int | None = None,
             accelerator=None) -> dict:
    """Every process evaluates batches i = rank, rank + world, ...; sums are all-reduced. Masks are drawn from
    generators seeded by (seed, "eval", i), so successive evaluations of one run see the same corrupted inputs."""
    n_val = len(val_blocks) if val_blocks is not None else 0
    if n_val == 0:
        return {}
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    device = accelerator.device if accelerator else next(module.parameters()).device
    was_training = module.training
    module.eval()
    handle = ModelHandle(module, module)
    n_batches = math.ceil(n_val / batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    sums = torch.zeros(3, dtype=torch.float64)
    for i in range(rank, n_batches, world):
        idx = torch.arange(i * batch_size, min(n_val, (i + 1) * batch_size))
        batch = objective.collate(get_blocks(val_blocks, idx), generator(seed, "eval", i))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with accelerator.autocast() if accelerator else torch.autocast("cpu", enabled=False):
            loss, metrics = objective.loss(handle, batch)
        n = float(metrics["n_predicted"])
        sums += torch.tensor([float(loss) * n, float(metrics["accuracy"]) * n, n], dtype=torch.float64)
    if world > 1:
        sums = accelerator.reduce(sums.to(device), reduction="sum").cpu()
    module.train(was_training)
    loss_sum, acc_sum, n = sums.tolist()
    if n == 0:
        return {}
    out = {"loss": loss_sum / n, "accuracy": acc_sum / n, "n_predicted": int(n)}
    if objective.name in PERPLEXITY_OBJECTIVES:
        out["perplexity"] = math.exp(min(out["loss"], 50.0))
    return out
