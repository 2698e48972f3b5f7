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

    def decay_start(self, optim_cfg) -> float:
        """Where a wsd schedule's decay begins, as progress after warmup: before the last optim.decay_steps
        steps of a step (or token) budget, else before the last optim.decay_fraction of the budget."""
        if optim_cfg.decay_steps is not None and self.max_steps:
            warm = min(self.warmup_steps, self.max_steps - 1)
            return max(0.0, 1.0 - optim_cfg.decay_steps / max(1, self.max_steps - warm))
        return 1.0 - optim_cfg.decay_fraction

    def done_fraction(self, step: int, elapsed: float) -> float:
        """Fraction of the budget done, warmup included (the progress bar's)."""
        fractions = [step / self.max_steps] if self.max_steps else []
        if self.max_time:
            fractions.append(elapsed / self.max_time)
        return min(1.0, max(fractions + [0.0]))

    def finished(self, step: int, elapsed: float) -> bool:
        return (self.max_steps is not None and step >= self.max_steps) or \
            (self.max_time is not None and elapsed >= self.max_time)


# ---- FLOPs per step, before training (an equal-compute budget is given to the trainer as max_steps) -----------
def stack_flops(model_cfg, batch: dict) -> float:
    """Training FLOPs of the stacks (not the LM head) for one micro-batch, from its shapes: the trainer's count."""
    ids = batch["input_ids"]
    dec = batch.get("decoder_input_ids")
    if model_cfg.arch == "encoder-decoder" and dec is not None:
        return model_cfg.train_flops(ids.numel(), dec.numel(), 0, ids.shape[1], dec.shape[1])
    if model_cfg.arch == "decoder":
        return model_cfg.train_flops(0, ids.numel(), 0, 0, ids.shape[1])
    return model_cfg.train_flops(ids.numel(), 0, 0, ids.shape[1], 0)


def batch_flops(model_cfg, batch: dict, objective=None) -> float:
    """Training FLOPs of one micro-batch as the trainer counts them: the stacks, plus the head per predicted
    position. The predicted positions are what the loss reports as n_predicted: the objective's head_predictions
    (by default the batch's `labels` other than -100; ELECTRA's discriminator reads every real token); a batch
    without labels is counted as predicting every position of its last stack (an upper bound)."""
    labels = batch.get("labels")
    if objective is not None and labels is not None:
        predicted = objective.head_predictions(batch)
    elif labels is not None:
        predicted = int((labels != -100).sum())
    else:
        dec = batch.get("decoder_input_ids")
        predicted = (dec if dec is not None else batch["input_ids"]).numel()
    return stack_flops(model_cfg, batch) + model_cfg.train_flops(0, 0, predicted, 0, 0)


def expected_step_flops(model_cfg, objective, micro_batches, generators, grad_accum: int,
                        world_size: int) -> float:
    """Expected training FLOPs of one optimizer step: the mean FLOPs of the objective's batches made from sample
    `micro_batches` (LongTensor blocks [batch_size, block_length], each collated with its generator) times the
    micro-batches of a step (grad_accum x world_size), the objective's own parameters included. Exact for objectives whose batch shapes and predicted
    positions are fixed by the block length (CLM, span corruption); an expected value where they depend on the
    draw (MLM predicts about 15% of the non-special tokens, infilling's input length varies)."""
    batches = [objective.collate(blocks, gen) for blocks, gen in zip(micro_batches, generators)]
    values = [batch_flops(model_cfg, batch, objective) + objective.own_flops(batch) for batch in batches]
    if not values:
        raise ValueError("expected_step_flops needs at least one sample micro-batch")
    return sum(values) / len(values) * grad_accum * world_size
