"""AdamW with weight decay on weight matrices only, and the learning-rate schedule as a pure function of progress.

Decay policy: every parameter with 2 or more dimensions is decayed except embedding tables (token, position,
token-type): biases, norm gains and embeddings are not (the BERT / GPT-2 / nanoGPT convention). The tied LM head
is the token embedding, so it is not decayed either.

The schedule is computed by the trainer at every step from the run's progress (no stateful scheduler to save):
linear warmup over `warmup_steps`, then cosine / linear decay to `min_lr_ratio * lr`, or constant. With a time
budget the decay follows the elapsed fraction of `max_time`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 and id(p) not in embedding_params else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, optim_cfg, device_type: str) -> torch.optim.Optimizer:
    fused = optim_cfg.fused
    if fused is None:  # one kernel for all parameters: 3x faster than foreach on CPU too (benchmarks/train_step.py)
        fused = device_type in ("cuda", "xpu", "cpu")
    groups = param_groups(model, optim_cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
                             fused=bool(fused))


def lr_factor(step: int, progress: float, optim_cfg) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based, the step about to be taken).

    progress: fraction of the budget done, in [0, 1] (steps, tokens or time, whichever is furthest).
    For step budgets the trainer passes progress measured after warmup so decay starts when warmup ends."""
    warm = optim_cfg.warmup_steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if optim_cfg.schedule == "constant":
        return 1.0
    p = min(max(progress, 0.0), 1.0)
    floor = optim_cfg.min_lr_ratio
    if optim_cfg.schedule == "linear":
        return floor + (1.0 - floor) * (1.0 - p)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def set_lr(optimizer: torch.optim.Optimizer, lr: float):
    for group in optimizer.param_groups:
        group["lr"] = lr
