"""Everything that READS a run directory, in one place (export, model cards and continued pretraining use it).

A run directory, as the trainer (pretrain/run.py, pretrain/checkpoint.py) writes it:

    RUN/config.yaml                 the resolved TrainConfig
    RUN/model_config.json           ModelConfig.to_dict() (optional: else final/, else resolved from config.yaml)
    RUN/tokenizer/                  PreTrainedTokenizerFast.save_pretrained
    RUN/metrics.jsonl               one JSON object per line: split ("train" | "val"), step, tokens, loss, ...
    RUN/checkpoints/step_N/         accelerate save_state (model.safetensors, optimizer, RNG) + trainer_state.json
    RUN/final/                      model.safetensors + model_config.json + tokenizer + config.yaml + metrics.json
    RUN/init/                       (from `pretrain export --from-hub`) the imported weights the run starts from

    model, model_cfg, tokenizer, info = load_run_model("runs/bert", checkpoint="step_200")

Weights load from safetensors only; tokenizers load without remote code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .checkpoint import _STEP_DIR as _STEP, STATE_FILE, CheckpointManager  # one definition of a checkpoint
from .errors import UserError

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.json"
_PREFIXES = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers that save_state(unwrap=False) may leave


# ---- small readers ---------------------------------------------------------------------------------------------
def read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}); restore the run's config.yaml") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a config mapping; restore the run's config.yaml")
    return data


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def read_metrics(run_dir: Path, up_to_step: int | None = None) -> list[dict]:
    """The rows of RUN/metrics.jsonl (a line cut by a kill is skipped), optionally only those with step <= N."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and (up_to_step is None or row.get("step", 0) <= up_to_step):
            rows.append(row)
    return rows


def final_val_metrics(rows: list[dict]) -> dict:
    """The last validation row's metrics (without bookkeeping keys)."""
    for row in reversed(rows):
        if row.get("split") == "val":
            return {k: v for k, v in row.items() if k not in ("split", "step", "tokens", "elapsed", "epoch")
                    and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
    return {}


def load_tokenizer(path: Path):
    """The run's tokenizer/ folder; a broken one is one clear error."""
    from .tokenizer import load_tokenizer as _load

    try:
        return _load(str(path))
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot load the tokenizer in {path} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}); restore the run's tokenizer/") from None


# ---- locating things -------------------------------------------------------------------------------------------
def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint (it holds trainer_state.json), oldest first."""
    return CheckpointManager(run_dir).complete()


def resolve_weights_dir(run: Path, checkpoint: str | None) -> tuple[Path, str]:
    """(directory holding model.safetensors, label): --checkpoint step_N / a path, else final/, else init/."""
    if checkpoint:
        candidates = [Path(checkpoint)] if Path(checkpoint).is_absolute() else \
            [run / "checkpoints" / checkpoint, run / checkpoint, Path(checkpoint)]
        if checkpoint.isdigit():
            candidates.insert(0, run / "checkpoints" / f"step_{checkpoint}")
        for path in candidates:
            if path.is_dir():
                if _STEP.match(path.name) and not (path / STATE_FILE).is_file():
                    raise UserError(f"checkpoint {path} is incomplete (no {STATE_FILE}: its save was interrupted); "
                                    f"pick another with --checkpoint (available: {_available(run)})")
                if not (path / WEIGHTS).is_file():
                    raise UserError(f"no {WEIGHTS} in {path}; pick another with --checkpoint (available: "
                                    f"{_available(run)})")
                return path, path.name
        raise UserError(f"checkpoint {checkpoint!r} not found in {run / 'checkpoints'}; available: {_available(run)}")
    for name in ("final", "init"):
        if (run / name / WEIGHTS).is_file():
            return run / name, name
    found = checkpoints(run)
    raise UserError(f"{run} has no final model (the run did not finish)" +
                    (f"; export a checkpoint with --checkpoint {found[-1][1].name} (available: {_available(run)})"
                     if found else "; train it to the end first"))


def _available(run: Path) -> str:
    names = [p.name for _, p in checkpoints(run)]
    if (run / "final" / WEIGHTS).is_file():
        names.append("final (the default)")
    return ", ".join(names) or "none"


def _model_config(run: Path, weights_dir: Path, config: dict, tokenizer):
    from models import ModelConfig

    for path in (weights_dir / MODEL_CONFIG, run / MODEL_CONFIG, run / "final" / MODEL_CONFIG,
                 run / "init" / MODEL_CONFIG):
        if path.is_file():
            try:
                return ModelConfig.from_dict(read_json(path))
            except (TypeError, ValueError) as e:
                raise UserError(f"{path} is not a valid model config ({e}); restore it from the run") from None
    # neither the checkpoint nor the run holds one: resolve it as the trainer did, from config.yaml + tokenizer
    from .config import parse_config, resolve_model_config
    from .run import _token_ids

    cfg = parse_config([], None, "pretrain export", saved_config=str(run / "config.yaml"))
    return resolve_model_config(cfg, len(tokenizer), _token_ids(tokenizer))


def load_state_dict(path: Path) -> dict:
    """Tensors of a safetensors file (never pickle), wrapper prefixes stripped."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:
        raise UserError(f"cannot read weights {path} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                        f"the file is corrupted: pick another checkpoint") from None
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_weights_into(model, path: Path):
    state = load_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        shown = (missing + unexpected + wrong)[:3]
        raise UserError(f"weights {path} do not fit the run's model config ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors, e.g. {', '.join(shown)}); "
                        f"was the run directory changed?")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


# ---- the one entry point ---------------------------------------------------------------------------------------
def load_run_model(run_dir, checkpoint: str | None = None):
    """(model, model_cfg, tokenizer, info) of a run: fp32, CPU, eval mode.

    checkpoint: None (final/, or init/ for an imported run), "step_N", "N", or a checkpoint directory.
    info: run_dir, weights (dir), checkpoint (label), step, tokens, elapsed, config (config.yaml as a dict),
    metrics (metrics.jsonl rows up to that step), val (final validation metrics), objective {name, options},
    data, tokenizer_config, seq_len, batch_size, source (for imported runs)."""
    from models import Transformer

    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"run directory {run} does not exist; pass the --run.output_dir of a run")
    if not (run / "config.yaml").is_file() and not (run / "final" / WEIGHTS).is_file():
        raise UserError(f"{run} is not a run directory (no config.yaml); pass the --run.output_dir of a run")
    weights_dir, label = resolve_weights_dir(run, checkpoint)
    config = read_yaml(run / "config.yaml") if (run / "config.yaml").is_file() else \
        read_yaml(weights_dir / "config.yaml") if (weights_dir / "config.yaml").is_file() else {}

    tok_dir = next((d for d in (run / "tokenizer", weights_dir, run / "final")
                    if (d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file()), None)
    if tok_dir is None:
        raise UserError(f"no tokenizer in {run / 'tokenizer'}; restore the run's tokenizer/ folder")
    tokenizer = load_tokenizer(tok_dir)
    model_cfg = _model_config(run, weights_dir, config, tokenizer)
    if len(tokenizer) > model_cfg.vocab_size:
        raise UserError(f"the tokenizer in {tok_dir} has {len(tokenizer)} tokens but the model only "
                        f"{model_cfg.vocab_size}; the tokenizer does not belong to this run")
    model = Transformer(model_cfg)
    load_weights_into(model, weights_dir / WEIGHTS)
    model.eval()

    # where in the run these weights are
    state = {}
    if (weights_dir / STATE_FILE).is_file():
        state = read_json(weights_dir / STATE_FILE)
    elif (weights_dir / "metrics.json").is_file():
        state = read_json(weights_dir / "metrics.json")
    step = state.get("step")
    metrics = read_metrics(run, up_to_step=step)
    train_rows = [r for r in metrics if r.get("split", "train") != "val"]
    if step is None and train_rows:
        step = train_rows[-1].get("step")
    tokens = state.get("tokens", train_rows[-1].get("tokens") if train_rows else None)
    val = final_val_metrics(metrics)
    if not val and isinstance(state.get("val"), dict):
        val = {k: v for k, v in state["val"].items() if isinstance(v, (int, float))}
    run_cfg = config.get("run") or {}
    objective = config.get("objective") or {}
    info = {
        "run_dir": str(run), "weights": str(weights_dir), "checkpoint": label, "step": step, "tokens": tokens,
        "elapsed": state.get("elapsed"), "config": config, "metrics": metrics, "val": val,
        "objective": {"name": objective.get("name"), "options": objective.get("options") or {}},
        "data": config.get("data") or {}, "tokenizer_config": config.get("tokenizer") or {},
        "seq_len": run_cfg.get("seq_len"), "batch_size": run_cfg.get("batch_size"),
        "grad_accum": run_cfg.get("grad_accum"), "optim": config.get("optim") or {},
        "flops": state.get("flops") if isinstance(state.get("flops"), (int, float)) else _logged_flops(train_rows),
        "source": read_json(weights_dir / "source.json") if (weights_dir / "source.json").is_file() else None,
    }
    return model, model_cfg, tokenizer, info


def _logged_flops(train_rows: list[dict]) -> float | None:
    """Cumulative training FLOPs if the trainer logged them ("flops" running total or "step_flops" per row)."""
    if train_rows and isinstance(train_rows[-1].get("flops"), (int, float)):
        return float(train_rows[-1]["flops"])
    per_step = [r["step_flops"] for r in train_rows if isinstance(r.get("step_flops"), (int, float))]
    return float(sum(per_step)) if per_step and len(per_step) == len(train_rows) else None


def init_from_pretrained(model, path) -> None:
    """Load weights into `model` (our Transformer) from one of our weight folders (model.safetensors +
    model_config.json: a run's final/, init/ or a checkpoint) or a transformers folder / Hub id; the
    architecture must match model.config (sizes included). For the trainer's `model.init_from`."""
    import dataclasses

    from models import ModelConfig

    path_ = Path(path)
    if path_.is_dir() and (path_ / WEIGHTS).is_file() and (path_ / MODEL_CONFIG).is_file():
        source_cfg = ModelConfig.from_dict(read_json(path_ / MODEL_CONFIG))
        state = load_state_dict(path_ / WEIGHTS)
    else:
        from models.hf import from_transformers

        try:
            source = from_transformers(str(path))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load model.init_from {path} ({str(e).splitlines()[0][:200]}); pass a run's "
                            f"final/ folder, an exported folder or a Hub id") from None
        source_cfg, state = source.config, source.state_dict()
    ours = model.config
    ignore = {"dropout", "attention_dropout", "init", "init_std",  # training-only; ids below change no weight
              "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"}
    differing = [f.name for f in dataclasses.fields(ModelConfig)
                 if f.name not in ignore and getattr(ours, f.name) != getattr(source_cfg, f.name)]
    if differing:
        raise UserError(f"model.init_from {path} has a different architecture (fields {', '.join(differing)} "
                        f"differ); remove the model.* overrides that change them")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


__all__ = ["load_run_model", "init_from_pretrained", "read_metrics", "final_val_metrics", "checkpoints",
           "load_tokenizer", "load_state_dict"]
