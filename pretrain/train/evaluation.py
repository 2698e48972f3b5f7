"""Validation metrics of a model on held-out blocks: every metric the objective's loss reports, added up over
batches and processes as training adds them up (pretrain/train/aggregate.py: losses and accuracies weighted by the
targets they are a mean over, counts summed), and perplexity where the objective says it means something.
Sharded over processes."""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from accelerate.utils import DistributedType

from objectives.base import perplexity

from ..data.order import generator, get_blocks
from .aggregate import MetricSums
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
    sums = MetricSums(objective.metric_counts)
    # a sharded model's forward is a collective: then every process runs as many batches, the surplus discarded;
    # a process without a batch of its own runs one too, so that it reduces the same metrics as the others
    sharded = accelerator is not None and accelerator.distributed_type in (DistributedType.FSDP,
                                                                           DistributedType.DEEPSPEED)
    end = math.ceil(n_batches / world) * world if sharded else max(n_batches, rank + 1)
    for i in range(rank, end, world):
        j = min(i, n_batches - 1)
        idx = torch.arange(j * batch_size, min(n_val, (j + 1) * batch_size))
        batch = objective.collate(get_blocks(val_blocks, idx), generator(seed, "eval", j))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with accelerator.autocast() if accelerator else autocast(device, precision):
            _, metrics = objective.loss(handle, batch)
        sums.add(metrics, scale=1.0 if i < n_batches else 0.0)
    vector = sums.vector(device)
    if world > 1:
        vector = accelerator.reduce(vector, reduction="sum")
    for m, mode in zip(modules, was_training):
        m.train(mode)
    metrics = sums.read(vector)
    if not metrics.get("n_predicted"):
        return {}
    metrics = with_perplexity(metrics, objective)
    for name, variant in objective.validation_variants().items():  # e.g. FIM's left-to-right loss
        other = validation_metrics(module, variant, val_blocks, batch_size, seed, max_batches, accelerator, own,
                                   precision)
        metrics.update({f"{name}_{k}": v for k, v in other.items() if k != "n_predicted"})
    return metrics
