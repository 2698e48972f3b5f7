"""Validation metrics of a model on held-out blocks: loss, accuracy and the objective's own metric_names (all
weighted by the number of predicted tokens), any loss and accuracy an objective reports for a part of its examples
(weighted by that part's count), and perplexity where the objective says it means something. Sharded over
processes."""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from accelerate.utils import DistributedType

from objectives.base import is_count, metric_weight, perplexity

from ..data.order import generator, get_blocks
from .model_handle import ModelHandle


def with_perplexity(metrics: dict, objective) -> dict:
    """metrics plus "perplexity" when the objective's loss is a left-to-right NLL."""
    if objective.perplexity and "loss" in metrics:
        metrics["perplexity"] = perplexity(metrics["loss"])
    return metrics


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def validation_metrics(module, objective, val_blocks, batch_size: int, seed: int, max_batches: int | None = None,
                       accelerator=None, own=None, precision: str = "no") -> dict:
    """Every process evaluates batches i = rank, rank + world, ...; sums are all-reduced. Masks are drawn from
    generators seeded by (seed, "eval", i), so successive evaluations of one run see the same corrupted inputs.
    `own`: the objective's own module (None: objective.module). Without an accelerator, `precision` (bf16 / fp16 /
    no) is the autocast the run trained and evaluated under, so a later evaluation gives the logged numbers."""
    n_val = len(val_blocks) if val_blocks is not None else 0
    if n_val == 0:
        return {}
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    device = accelerator.device if accelerator else next(module.parameters()).device
    own = own if own is not None else objective.module
    modules = [m for m in (module, own) if m is not None]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    handle = ModelHandle(module, module, own)
    n_batches = math.ceil(n_val / batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    names = tuple(objective.metric_names)  # the objective's own metrics, averaged like accuracy
    sums = torch.zeros(3 + len(names), dtype=torch.float64)
    parts: dict = {}  # "P_loss" -> its sum weighted by "P_n_predicted", and each count summed (metric_weight)
    # a sharded model's forward is a collective: then every process runs as many batches, the surplus discarded
    sharded = accelerator is not None and accelerator.distributed_type in (DistributedType.FSDP,
                                                                           DistributedType.DEEPSPEED)
    for i in range(rank, math.ceil(n_batches / world) * world if sharded else n_batches, world):
        j = min(i, n_batches - 1)
        idx = torch.arange(j * batch_size, min(n_val, (j + 1) * batch_size))
        batch = objective.collate(get_blocks(val_blocks, idx), generator(seed, "eval", j))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with accelerator.autocast() if accelerator else autocast(device, precision):
            loss, metrics = objective.loss(handle, batch)
        if i >= n_batches:
            continue
        n = float(metrics["n_predicted"])
        sums += torch.tensor([float(loss) * n, float(metrics["accuracy"]) * n, n]
                             + [float(metrics[k]) * n for k in names], dtype=torch.float64)
        for k, v in metrics.items():
            weight = metric_weight(k, metrics)
            if k != "accuracy" and (weight is not None or is_count(k) and k != "n_predicted"):
                parts[k] = parts.get(k, 0.0) + float(v) * (float(metrics[weight]) if weight else 1.0)
    keys = sorted(parts)
    if world > 1:
        sums = accelerator.reduce(sums.to(device), reduction="sum").cpu()
        if keys:
            reduced = accelerator.reduce(torch.tensor([parts[k] for k in keys], dtype=torch.float64, device=device),
                                         reduction="sum").cpu().tolist()
            parts = dict(zip(keys, reduced))
    for m, mode in zip(modules, was_training):
        m.train(mode)
    loss_sum, acc_sum, n, *extras = sums.tolist()
    if n == 0:
        return {}
    metrics = with_perplexity({"loss": loss_sum / n, "accuracy": acc_sum / n, "n_predicted": int(n)}, objective)
    metrics.update({k: v / n for k, v in zip(names, extras)})
    for k in keys:
        weight = metric_weight(k, parts)
        if weight is None:
            metrics[k] = int(parts[k])
        elif parts[weight]:
            metrics[k] = parts[k] / parts[weight]
    for name, variant in objective.validation_variants().items():  # e.g. FIM's left-to-right loss
        other = validation_metrics(module, variant, val_blocks, batch_size, seed, max_batches, accelerator, own,
                                   precision)
        metrics.update({f"{name}_{k}": v for k, v in other.items() if k != "n_predicted"})
    return metrics
