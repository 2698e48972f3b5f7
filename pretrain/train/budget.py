"""The training budget: steps, tokens (converted to steps) and wall time; training stops at the first reached.
The learning-rate schedule reads `progress`, so a time budget decays the rate over the elapsed time."""
from __future__ import annotations

import math


class Budget:
    def __init__(self, run_cfg, warmup_steps: int, block_length: int, world_size: int):
        # corpus tokens one optimizer step consumes: the global batch of blocks
        self.tokens_per_step = run_cfg.batch_size * world_size * run_cfg.grad_accum * block_length
        limits = []
        if run_cfg.max_steps is not None:
            limits.append(run_cfg.max_steps)
        if run_cfg.max_tokens is not None:
            limits.append(math.ceil(run_cfg.max_tokens / self.tokens_per_step))
        self.max_steps: int | None = min(limits) if limits else None
        self.max_time: float | None = run_cfg.max_time
        self.warmup_steps = warmup_steps

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the budget done after warmup (the furthest of steps / tokens and time): what the schedule
        decays over."""
        fractions = []
        if self.max_steps:
            warm = min(self.warmup_steps, self.max_steps - 1)
            fractions.append((step - warm) / max(1, self.max_steps - warm))
        if self.max_time:
            fractions.append(elapsed / self.max_time)
        return min(1.0, max(fractions + [0.0]))

    def done_fraction(self, step: int, elapsed: float) -> float:
        """Fraction of the budget done, warmup included (the progress bar's)."""
        fractions = [step / self.max_steps] if self.max_steps else []
        if self.max_time:
            fractions.append(elapsed / self.max_time)
        return min(1.0, max(fractions + [0.0]))

    def finished(self, step: int, elapsed: float) -> bool:
        return (self.max_steps is not None and step >= self.max_steps) or \
            (self.max_time is not None and elapsed >= self.max_time)
