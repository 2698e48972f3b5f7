"""Decay from a stable-phase checkpoint: a warmup-stable-decay run's cool-down started from any saved step.

    --run.decay_from runs/x/checkpoints/step_600 --optim.decay_steps 200 --run.output_dir runs/x-decay600

A new run directory continues the source run exactly (weights, optimizer, data position, RNG) from that
checkpoint, with the source's config under the flags given now, and decays the learning rate from the peak over
`optim.decay_steps` steps (default: the decay_fraction of the whole run it makes): schedule wsd, max_steps = the
checkpoint's step + decay_steps. It records where it came from (run.decay_from in its config.yaml) and starts its
metrics.jsonl with the source's rows up to that step, so its loss curve is the whole history. Decaying at step S
gives exactly the run that was planned from the start with max_steps S + D and decay_steps D.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import ConfigError
from .checkpoint import STATE_FILE, STEP_DIR, CheckpointManager
from .metrics import read_metrics
from .run_dir import RunDir, read_yaml


def source_run(checkpoint) -> RunDir:
    """The run directory a checkpoint (run/checkpoints/step_N) belongs to."""
    return RunDir(Path(checkpoint).parent.parent)


def source_checkpoint(path: str) -> tuple[Path, int]:
    """(checkpoint folder, its step) of run.decay_from; a ConfigError naming the available ones otherwise."""
    checkpoint = Path(path).expanduser()
    found = STEP_DIR.match(checkpoint.name)
    if found and (checkpoint / STATE_FILE).is_file() and source_run(checkpoint).config.is_file():
        return checkpoint, int(found.group(1))
    run = RunDir(checkpoint) if RunDir(checkpoint).config.is_file() else source_run(checkpoint)
    available = ", ".join(str(p) for _, p in run.complete_checkpoints()) or "none"
    raise ConfigError(f"run.decay_from {path} is not a complete checkpoint of a run (a run's checkpoints/step_N "
                      f"folder); available: {available}")


def decay_config(cfg, checkpoint: Path, step: int):
    """The decay run's config: `cfg` parsed with the source run's config under the flags; schedule wsd, the decay
    length fixed in steps, the budget ending when the decay does. Refuses a checkpoint outside the stable phase
    and an output directory that is the source run's."""
    source = source_run(checkpoint)
    if Path(cfg.run.output_dir).resolve() == source.path.resolve():
        raise ConfigError(f"run.decay_from starts a new run beside {source}; give it its own --run.output_dir")
    _check_stable(source, step)
    o = cfg.optim
    if o.decay_steps is None:
        if o.decay_fraction >= 1:
            raise ConfigError("run.decay_from with optim.decay_fraction 1 leaves no steps before the decay; set "
                              "optim.decay_steps")
        o.decay_steps = max(1, round(step * o.decay_fraction / (1 - o.decay_fraction)))
    o.schedule = "wsd"
    cfg.run.max_steps, cfg.run.max_tokens, cfg.run.max_time = step + o.decay_steps, None, None
    cfg.run.decay_from = str(checkpoint)
    return cfg


def _check_stable(source: RunDir, step: int):
    """The rate of the source's step `step` must be its peak: warmup over, decay not begun."""
    peak = float((read_yaml(source.config).get("optim") or {}).get("lr", 0.0))
    rate = next((row.get("lr") for row in read_metrics(source.metrics, step)
                 if row.get("split") == "train" and row.get("step") == step), None)
    if rate is None or peak <= 0 or rate >= peak * (1 - 1e-6):
        return
    raise ConfigError(f"checkpoint step_{step} of {source} was trained at lr {rate:.3g}, below the peak {peak:.3g} "
                      f"(still warming up, or already decaying); decay from a checkpoint of the stable phase")


def starts_here(run_dir: RunDir, checkpoint: Path | None) -> bool:
    """Whether this run begins from another run's checkpoint (a decay), not from one of its own."""
    return checkpoint is not None and Path(checkpoint).resolve().parent != run_dir.checkpoints.resolve()


def inherit_metrics(run_dir: RunDir, checkpoint: Path):
    """The source run's metrics rows up to the checkpoint's step, as the start of this run's metrics.jsonl."""
    step = CheckpointManager.read_state(checkpoint)["step"]
    rows = read_metrics(source_run(checkpoint).metrics, step)
    write_text_atomic(run_dir.metrics, "".join(json.dumps(row) + "\n" for row in rows))
