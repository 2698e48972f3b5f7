"""AdamW with weight decay on weight matrices only, and the learning-rate schedule as a pure function of progress.

Decay policy: every parameter with 2 or more dimensions is decayed except embedding tables (token, position,
token-type): biases, norm gains and embeddings are not (the BERT / GPT-2 / nanoGPT convention). The tied LM head
is the token embedding, so it is not decayed either.

The schedule is computed by the trainer at every step from the run's progress (no stateful scheduler to save):
linear warmup over `warmup_steps`, then cosine / linear decay to `min_lr_ratio * lr`, or constant, or
warmup-stable-decay (wsd: the peak rate until the last `decay_steps` steps -- or the last `decay_fraction` of the
budget -- then a linear, cosine or 1-sqrt decay to the floor; the schedule of MiniCPM, ModernBERT and OLMo, whose
stable-phase checkpoints can each be decayed later: pretrain/train/decay.py). With a time budget the decay follows
the elapsed fraction of `max_time`.
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


# the shape of a decay from the peak (q = 0) to the floor (q = 1)
DECAY_SHAPES = {"linear": lambda q: 1.0 - q, "cosine": lambda q: 0.5 * (1.0 + math.cos(math.pi * q)),
                "1-sqrt": lambda q: 1.0 - math.sqrt(q)}


def lr_factor(step: int, progress: float, optim_cfg, decay_start: float | None = None) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based, the step about to be taken).

    progress: fraction of the budget done, in [0, 1] (steps, tokens or time, whichever is furthest).
    For step budgets the trainer passes progress measured after warmup so decay starts when warmup ends.
    decay_start (wsd): the progress at which the decay begins (Budget.decay_start); 1 - optim.decay_fraction
    when not given."""
    warm = optim_cfg.warmup_steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if optim_cfg.schedule == "constant":
        return 1.0
    p = min(max(progress, 0.0), 1.0)
    floor = optim_cfg.min_lr_ratio
    if optim_cfg.schedule != "wsd":
        return floor + (1.0 - floor) * DECAY_SHAPES[optim_cfg.schedule](p)
    start = 1.0 - optim_cfg.decay_fraction if decay_start is None else decay_start
    if p <= start:
        return 1.0  # the stable phase
    q = min(1.0, (p - start) / (1.0 - start))
    return floor + (1.0 - floor) * DECAY_SHAPES[optim_cfg.decay_shape](q)


def set_lr(optimizer: torch.optim.Optimizer, lr: float):
    for group in optimizer.param_groups:
        group["lr"] = lr
