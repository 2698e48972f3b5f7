"""A trained run, read back for evaluation, export, comparison and inspection.

    model, model_cfg, tokenizer, record = load_run_model("runs/bert", checkpoint="step_200")
    spec = load_run_spec(record, tokenizer, model_cfg)    # objective (with its own parameters), block length

The record says where in the run these weights are (step, tokens, FLOPs, time), how the run was configured (the
parsed TrainConfig) and what it logged (metrics rows up to that step, final validation metrics).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models import Transformer

from ..errors import UserError
from .build import RunSpec, model_config_for, run_spec
from .checkpoint import STATE_FILE
from .config import TrainConfig, parse_config
from .metrics import val_metrics
from .run_dir import CONFIG, SOURCE, SUMMARY, WEIGHTS, RunDir, load_weights_into, objective_weights, read_json


@dataclass
class RunRecord:
    run_dir: Path
    weights: Path  # the directory the weights were read from
    checkpoint: str  # "final", "init" or "step_N"
    config: TrainConfig | None  # None only for a directory without any config.yaml
    step: int | None = None
    tokens: int | None = None
    elapsed: float | None = None  # seconds of training
    flops: float | None = None  # training FLOPs, as logged
    metrics: list[dict] = field(default_factory=list)  # metrics.jsonl rows up to this step
    val: dict = field(default_factory=dict)  # the last validation metrics
    source: dict | None = None  # for imported runs: where the weights came from

    @property
    def objective_name(self) -> str | None:
        return self.config.objective.name if self.config else None


def read_config(run_dir: RunDir, weights_dir: Path) -> TrainConfig | None:
    """The run's config.yaml (else the one saved beside the weights), parsed without the static checks."""
    path = next((p for p in (run_dir.config, weights_dir / CONFIG) if p.is_file()), None)
    if path is None:
        return None
    try:
        return parse_config([], None, "pretrain", saved_config=str(path), check=False)
    except UserError as e:
        raise UserError(f"cannot read {path} ({e}); restore the run's config.yaml") from None


def load_run_model(run_dir, checkpoint: str | None = None):
    """(model, model_cfg, tokenizer, record) of a run: fp32, CPU, eval mode.

    checkpoint: None (final/, or init/ for an imported run), "step_N", "N", or a checkpoint directory."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"run directory {run} does not exist; pass the --run.output_dir of a run")
    if not run.config.is_file() and not run.finished():
        raise UserError(f"{run} is not a run directory (no {CONFIG}); pass the --run.output_dir of a run")
    weights_dir, label = run.weights_dir(checkpoint)
    config = read_config(run, weights_dir)
    tokenizer = run.read_tokenizer(weights_dir)
    model_cfg = run.read_model_config(weights_dir)
    if model_cfg is None:  # neither the checkpoint nor the run holds one: resolve it as the trainer did
        if config is None:
            raise UserError(f"{run} holds neither a model config nor a {CONFIG}; restore one of them")
        model_cfg = model_config_for(config, tokenizer)
    if len(tokenizer) > model_cfg.vocab_size:
        raise UserError(f"the tokenizer of {run} has {len(tokenizer)} tokens but the model only "
                        f"{model_cfg.vocab_size}; the tokenizer does not belong to this run")
    model = Transformer(model_cfg)
    load_weights_into(model, weights_dir / WEIGHTS)
    model.eval()
    return model, model_cfg, tokenizer, _record(run, weights_dir, label, config)


def _record(run: RunDir, weights_dir: Path, label: str, config) -> RunRecord:
    """Where in the run these weights are: the checkpoint's trainer state, or final/'s summary."""
    state = {}
    for name in (STATE_FILE, SUMMARY):
        if (weights_dir / name).is_file():
            state = read_json(weights_dir / name)
            break
    step = state.get("step")
    metrics = run.read_metrics(up_to_step=step)
    train_rows = [r for r in metrics if r.get("split", "train") == "train"]
    if step is None and train_rows:
        step = train_rows[-1].get("step")
    val = val_metrics(metrics)
    if not val and isinstance(state.get("val"), dict):
        val = {k: v for k, v in state["val"].items() if isinstance(v, (int, float))}
    flops = state.get("flops")
    if not isinstance(flops, (int, float)):
        flops = train_rows[-1].get("flops") if train_rows and isinstance(train_rows[-1].get("flops"),
                                                                          (int, float)) else None
    return RunRecord(
        run_dir=run.path, weights=weights_dir, checkpoint=label, config=config, step=step,
        tokens=state.get("tokens", train_rows[-1].get("tokens") if train_rows else None),
        elapsed=state.get("elapsed"), flops=flops, metrics=metrics, val=val,
        source=read_json(weights_dir / SOURCE) if (weights_dir / SOURCE).is_file() else None)


def load_run_spec(record: RunRecord, tokenizer, model_cfg) -> RunSpec:
    """The run's spec as the trainer built it: its objective (with its own parameters, if any, as trained) and
    block length."""
    if record.config is None:
        raise UserError(f"{record.run_dir} has no {CONFIG}: its objective is unknown; restore the run's config")
    spec = run_spec(record.config, tokenizer, model_cfg)
    objective = spec.objective
    if objective.module is not None:
        weights = objective_weights(record.weights)
        if weights is None:
            raise UserError(f"{record.weights} holds no weights for objective '{objective.name}''s own parameters; "
                            f"use the run's final/ or a checkpoint")
        load_weights_into(objective.module, weights)
        objective.module.eval()
    return spec
