"""The training loop on accelerate.Accelerator: gradient accumulation, clipping, the LR schedule, the budget
(steps / tokens / time), periodic evaluation and checkpoints, non-finite handling, metrics and the progress bar.

Exactness: the blocks of each step come from DataOrder (seeded by (seed, epoch)), the objective's masks from a
generator seeded by (seed, step, rank, micro), dropout from the global RNG reseeded by (seed, step, rank). A run
resumed from a checkpoint therefore computes the same batches, masks and losses as an uninterrupted one.

An objective with parameters of its own (`objective.module`) has them prepared, optimized, clipped, checkpointed
and resumed together with the model; the objective reaches the prepared version as `model.own`.

SIGTERM or a first Ctrl-C (stop.py) on any process: every process finishes the same optimizer step (the request
travels with the step's metric reduction), writes the checkpoint and raises Stopped.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import DistributedType
from torch.utils.checkpoint import checkpoint

from models import Transformer
from ..data.order import DataOrder, StreamOrder, generator, mix_seed
from ..errors import Stopped, UserError
from .aggregate import MetricSums
from .budget import Budget, stack_flops
from .checkpoint import CheckpointManager, fault_point
from .evaluation import validation_metrics, with_perplexity
from .hardware import attention_kernel, peak_flops
from .metrics import MetricsLog, val_metrics
from .model_handle import ModelHandle
from .optim import build_optimizer, lr_factor, set_lr
from .progress import Progress
from .run_dir import RunDir
from .stop import StopRequests


def enable_activation_checkpointing(model: torch.nn.Module) -> int:
    """Recompute every Transformer layer in the backward pass (torch.utils.checkpoint, non-reentrant); returns the
    number of layers wrapped."""
    wrapped = 0
    for stack in (getattr(model, "encoder", None), getattr(model, "decoder", None)):
        for layer in getattr(stack, "layers", None) or []:
            forward = layer.forward
            layer.forward = (lambda f: lambda *a, **k: checkpoint(f, *a, use_reentrant=False, **k))(forward)
            wrapped += 1
    return wrapped


def comm_failure(e: BaseException) -> bool:
    """A collective that failed because a peer is gone or silent (gloo / NCCL / the c10d store)."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return any(marker in text for marker in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out",
                                             "timed out", "Broken pipe", "c10d"))


class Trainer:
    def __init__(self, cfg, model, objective, block_length: int, train_blocks, val_blocks, run_dir, accelerator,
                 run_state: dict | None = None):
        self.cfg, self.model_cfg, self.objective = cfg, model.config, objective
        self.run_cfg, self.optim_cfg = cfg.run, cfg.optim
        self.acc, self.run_dir = accelerator, RunDir(run_dir)
        self.train_blocks, self.val_blocks = train_blocks, val_blocks
        self.run_state = dict(run_state or {})  # arch, vocab, hashes written into every checkpoint
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        r = self.run_cfg
        self.streaming = not hasattr(train_blocks, "__len__")
        if self.streaming:
            self.order = StreamOrder(train_blocks, r.batch_size, self.world, r.grad_accum, self._all_ranks_ok)
        else:
            self.order = DataOrder(train_blocks, r.seed, r.batch_size, self.world, r.grad_accum)
        self.budget = Budget(r, cfg.optim.warmup_steps, block_length, self.world)
        self.tokens_per_step = self.budget.tokens_per_step

        own = objective.module
        if own is not None and accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            raise UserError(f"objective '{objective.name}' trains parameters of its own beside the model (shared "
                            f"with it), which {accelerator.distributed_type.value} cannot shard together with the "
                            f"model; launch it data parallel (recipes/accelerate/multi_gpu.yaml)")
        trained = model if own is None else torch.nn.ModuleList([model, own])
        optimizer = build_optimizer(trained, cfg.optim, accelerator.device.type)
        if own is None:
            self.model, self.optimizer = accelerator.prepare(model, optimizer)
            self.own = None
        else:  # saved as model.safetensors and model_1.safetensors
            self.model, self.own, self.optimizer = accelerator.prepare(model, own, optimizer)
        self.module = accelerator.unwrap_model(self.model)
        if r.activation_checkpointing:
            enable_activation_checkpointing(self.module)
        self.attention_kernel = attention_kernel(r.attention_kernel, getattr(objective, "documents", False),
                                                 self.module.config, accelerator.device.type, r.compile)
        self.module.use_attention_kernel(self.attention_kernel)
        if r.compile:
            self.module.compile()
        # every trained parameter once (an objective's module may share some with the model)
        self.params = list({id(p): p for m in (self.model, self.own) if m is not None
                            for p in m.parameters() if p.requires_grad}.values())
        self.ckpt = CheckpointManager(self.run_dir.checkpoints, r.keep_last)
        self.metrics = MetricsLog(self.run_dir.metrics, enabled=accelerator.is_main_process)
        self.step, self.tokens, self.elapsed, self.epoch, self.index, self.skipped = 0, 0, 0.0, 0, 0, 0
        self.flops = 0.0  # training FLOPs so far (all processes), for compute-matched comparisons
        self._peak = None
        self._resumed_from = None
        self.stops = StopRequests()
        self.packing = {}  # packing statistics, logged once as a "packing" row of a fresh run

    @property
    def own_module(self):
        """The objective's own parameters, unwrapped (None when it has none)."""
        return None if self.own is None else self.acc.unwrap_model(self.own)

    def whole_model(self):
        """The trained model as one plain module: under FSDP its shards gathered into a fresh copy on the main
        process (every process must call this; the others get None), else the module itself."""
        if self.acc.distributed_type != DistributedType.FSDP:
            return self.module
        state = self.acc.get_state_dict(self.model)  # a collective: full tensors on the main process
        if not self.acc.is_main_process:
            return None
        whole = Transformer(self.model_cfg)
        whole.load_state_dict(state, strict=True)
        return whole.eval()

    # ---- budget and schedule ---------------------------------------------------------------------------------
    def finished(self) -> bool:
        return self.budget.finished(self.step, self.elapsed)

    def lr(self) -> float:
        return self.optim_cfg.lr * lr_factor(self.step, self.budget.progress(self.step, self.elapsed),
                                             self.optim_cfg, self.budget.decay_start(self.optim_cfg))

    # ---- state ---------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {**self.run_state, "step": self.step, "tokens": self.tokens, "elapsed": self.elapsed,
                "epoch": self.epoch, "index": self.index, "skipped_steps": self.skipped, "flops": self.flops,
                "world_size": self.world, "objective": self.objective.name}

    def resume(self, path: Path):
        if self._resumed_from == path:
            return  # already loaded (the run loads before it rewrites the run's config)
        saved = CheckpointManager.read_state(path)
        if self.streaming and saved.get("world_size", self.world) != self.world:
            raise UserError(f"{path} was saved by {saved['world_size']} processes; a streamed corpus is sharded per "
                            f"process, so resume it with {saved['world_size']} processes (or set data.streaming "
                            f"false)")
        CheckpointManager.load(self.acc, path)
        self._resumed_from = path
        self.step, self.tokens, self.elapsed = saved["step"], saved["tokens"], saved["elapsed"]
        self.epoch, self.index, self.skipped = saved["epoch"], saved["index"], saved.get("skipped_steps", 0)
        self.flops = saved.get("flops", 0.0)
        if self.acc.is_main_process:
            self.metrics.truncate_after(self.step)

    def save_checkpoint(self):
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise UserError(f"parameters are not finite at step {self.step}; not saving a checkpoint over the "
                            f"last good one; lower optim.lr or raise optim.warmup_steps and resume")
        return self.ckpt.save(self.acc, self.step, self.state())

    # ---- one step ------------------------------------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.acc.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _flops(self, batch: dict) -> float:
        """FLOPs of the stacks (and the objective's own parameters) for this micro-batch; the head's share is added
        per step from the reduced count."""
        return stack_flops(self.model_cfg, batch) + self.objective.own_flops(batch)

    def train_step(self) -> dict:
        r = self.run_cfg
        window, self.epoch, self.index = self.order.step_indices(self.epoch, self.index)
        torch.manual_seed(mix_seed(r.seed, "dropout", self.step, self.rank))
        prepared = [m for m in (self.model, self.own) if m is not None]
        for m in prepared:
            m.train()
        handle = ModelHandle(self.model, self.module, self.own)
        sums, flops, nonfinite = MetricSums(self.objective.metric_counts), 0.0, False
        grad_norm = torch.tensor(float("nan"))
        for micro in range(r.grad_accum):
            blocks = self.order.micro_batch(window, micro, self.rank)
            batch = self.objective.collate(blocks, generator(r.seed, "collate", self.step, self.rank, micro))
            batch = self._to_device(batch)
            with self.acc.accumulate(*prepared), self.acc.autocast():
                loss, metrics = self.objective.loss(handle, batch)
                self.acc.backward(loss)
                sums.add(metrics)
                flops += self._flops(batch)
                if self.acc.sync_gradients:
                    row = self._reduce(sums)
                    nonfinite = not math.isfinite(row.get("loss", 0.0))  # absent: no targets
                    if not nonfinite:
                        clip = self.optim_cfg.grad_clip
                        norm = self.acc.clip_grad_norm_(self.params, clip if clip > 0 else float("inf"))
                        grad_norm = torch.as_tensor(norm if norm is not None else float("nan")).float()
                        # fp16: an overflowing gradient is the loss scaler's to handle (its step skips and
                        # lowers the scale), not a fault of the run
                        nonfinite = norm is not None and self.acc.scaler is None \
                            and not bool(torch.isfinite(grad_norm))
                    if nonfinite:
                        self._on_nonfinite(row)
                    else:
                        set_lr(self.optimizer, self.lr())
                        self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        fault_point("step", self.step + 1, self.rank)
        row = with_perplexity(row, self.objective)
        row["grad_norm"] = float(grad_norm)
        row["lr"] = self.lr()
        # the head's FLOPs from the step's n_predicted summed over micro-batches and ranks: no per-micro-batch sync
        row["_flops"] = flops * self.world + self.model_cfg.train_flops(0, 0, row["n_predicted"], 0, 0)
        self.step += 1
        self.tokens += self.tokens_per_step
        return row

    def _reduce(self, sums: MetricSums) -> dict:
        """The step's metrics over its micro-batches and every process (one all-reduce, pretrain/train/aggregate.py),
        with "_stop" (a stop request on any process) and the elapsed time (the processes' mean) riding along."""
        vec = sums.vector(self.acc.device)
        extra = torch.tensor([float(self.stops.requested),
                              (time.perf_counter() - self._t0 + self._elapsed0) / self.world],
                             dtype=vec.dtype, device=vec.device)
        vec = torch.cat([vec, extra])
        if self.world > 1:
            vec = self.acc.reduce(vec, reduction="sum")
        out = sums.read(vec[:-2])
        out["_stop"] = float(vec[-2])
        self.elapsed = float(vec[-1])
        return out

    def _all_ranks_ok(self, ok: bool) -> bool:
        """True when `ok` holds on every rank (one tiny gather; single-process: ok itself)."""
        if self.world == 1:
            return ok
        return bool(self.acc.gather(torch.tensor([int(ok)], device=self.acc.device)).min())

    def _on_nonfinite(self, row: dict):
        step = self.step + 1
        if self.run_cfg.on_nonfinite == "skip":
            self.skipped += 1
            if self.acc.is_main_process:
                self.bar.write(f"warning: non-finite loss or gradient at step {step}; step skipped "
                               f"({self.skipped} so far)")
            return
        latest = self.ckpt.latest()
        raise UserError(f"non-finite loss ({row.get('loss')}) or gradient at step {step}; stopped without saving "
                        f"(last good checkpoint: {latest or 'none'}); lower optim.lr, raise optim.warmup_steps, "
                        f"or set run.on_nonfinite skip")

    # ---- evaluation ----------------------------------------------------------------------------------------------
    def validate(self) -> dict:
        r = self.run_cfg
        return validation_metrics(self.module, self.objective, self.val_blocks, r.batch_size, r.seed,
                                  r.eval_batches, self.acc, own=self.own_module)

    # ---- the loop ------------------------------------------------------------------------------------------------
    def train(self, resume_from: Path | None = None) -> dict:
        r, acc = self.run_cfg, self.acc
        if resume_from is not None:
            self.resume(resume_from)
            if acc.is_main_process:
                print(f"resumed from {resume_from} at step {self.step} ({self.tokens:,} tokens)", flush=True)
        elif acc.is_main_process:
            self.metrics.truncate_after(0)  # rows of an earlier attempt killed before its first checkpoint
            if self.packing and not any(row.get("split") == "packing" for row in self.metrics.rows()):
                self._log({"split": "packing", "step": 0, **self.packing})
        self._t0, self._elapsed0 = time.perf_counter(), self.elapsed
        self._peak = peak_flops(acc.device, acc.mixed_precision, r.peak_flops) * self.world
        self.bar = Progress(acc.is_main_process and r.progress, self.budget.done_fraction(self.step, self.elapsed)) \
            if acc.is_main_process else Progress(False)
        last_eval, last_saved = {}, self.step if resume_from else None
        try:
            with self.stops:
                last_eval, last_saved = self._loop(last_eval, last_saved)
            if last_eval.get("stopped_at") is not None:
                return last_eval
            if last_saved != self.step:
                self.save_checkpoint()
            if not last_eval:
                # a run resumed at its very end (killed after its last checkpoint) logged this validation already
                at_end = resume_from is not None and last_saved == self.step
                last_eval = val_metrics(self.metrics.rows(), self.step) if at_end else {}
                if not last_eval and (not at_end or self.world == 1):
                    last_eval = self._eval_and_log()
        except RuntimeError as e:
            if self.world > 1 and comm_failure(e):  # a peer died or hangs: one line, not a gloo/NCCL traceback
                first = " ".join(str(e).split())[:160]
                raise UserError(f"process {self.rank} of {self.world} lost contact with the others at step "
                                f"{self.step + 1} ({first}); another process died or hung, see its log; restart "
                                f"all processes with --resume (last complete checkpoint: "
                                f"{self.ckpt.latest() or 'none'}; run.dist_timeout sets how long to wait)") from None
            raise
        finally:
            self.bar.close()
            self.metrics.close()
        return last_eval

    def _loop(self, last_eval: dict, last_saved):
        """Steps until the budget is spent; returns (last validation, last saved step), with {"stopped_at": step}
        as the validation when run.stop_at_step ends it early; raises Stopped on a stop request."""
        r = self.run_cfg
        while not self.finished():
            t = time.perf_counter()
            row = self.train_step()
            dt = max(time.perf_counter() - t, 1e-9)
            stop_requested = row.pop("_stop") > 0  # on any process: every process stops after this step
            flops = row.pop("_flops")
            self.flops += flops
            tps = self.tokens_per_step / dt
            if not r.peak_flops:  # the run's own rate bounds the peak from below (a probe can hit a slow spell)
                self._peak = max(self._peak, flops / dt)
            row = {"split": "train", "step": self.step, "tokens": self.tokens, "epoch": self.epoch, **row,
                   "tokens_per_s": tps, "mfu": flops / dt / self._peak, "flops": self.flops, "elapsed": self.elapsed}
            self._log(row)
            self.bar.update(self.budget.done_fraction(self.step, self.elapsed), self.step,
                            row.get("loss", float("nan")), tps, row["mfu"])
            stopping = self.finished() or stop_requested or (r.stop_at_step is not None and self.step >= r.stop_at_step)
            if self.step % r.eval_every == 0 or self.finished():
                last_eval = self._eval_and_log()
            if self.step % r.save_every == 0 or stopping:
                checkpoint = self.save_checkpoint()
                last_saved = self.step
            if stop_requested and not self.finished():
                raise Stopped(self.stops.signal_name or "a stop request on another process", self.step, checkpoint,
                              self.run_dir.path)
            if stopping and not self.finished():
                if self.acc.is_main_process:
                    self.bar.write(f"stopped at step {self.step} (run.stop_at_step); continue with --resume")
                return {"stopped_at": self.step}, last_saved
        return last_eval, last_saved

    def _eval_and_log(self) -> dict:
        metrics = self.validate()
        if metrics:
            self._log({"split": "val", "step": self.step, "tokens": self.tokens, **metrics,
                       "elapsed": self.elapsed})
            if self.acc.is_main_process:
                shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "n_predicted")
                self.bar.write(f"step {self.step}: val {shown}")
        return metrics

    def _log(self, row: dict):
        if self.acc.is_main_process:
            self.metrics.write(row)
        if self.acc.trackers:
            split = row["split"]
            self.acc.log({f"{split}/{k}": v for k, v in row.items()
                          if k not in ("split", "step") and isinstance(v, (int, float))}, step=self.step)
