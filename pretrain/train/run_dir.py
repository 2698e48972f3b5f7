"""The run directory's layout, named once, and the plain reads and writes of its parts (every write atomic).

    RUN/config.yaml                 the resolved TrainConfig
    RUN/model_config.json           ModelConfig.to_dict() (the network after the tokenizer fixed the vocabulary)
    RUN/tokenizer/                  PreTrainedTokenizerFast.save_pretrained
    RUN/metrics.jsonl               one JSON object per line: split ("train" | "val"), step, tokens, loss, ...
    RUN/checkpoints/step_N/         accelerate save_state (model.safetensors, optimizer, RNG) + trainer_state.json
    RUN/final/                      model.safetensors (+ objective.safetensors) + model_config.json + tokenizer +
                                    config.yaml + metrics.json
    RUN/init/                       (from `pretrain export --from-hub`) the imported weights the run starts from
    RUN/finetune/<task>/results.json  (from `pretrain finetune`) downstream scores of the final model
    RUN/.lock                       held (flock) by the process writing the run while it lives (run_lock.py)

Weights load from safetensors only; tokenizers load without remote code.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_model
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from models import ModelConfig

from ..atomic import atomic_dir, write_json_atomic, write_text_atomic
from ..data.tokenizer import load_tokenizer
from ..errors import UserError
from .checkpoint import SHARDED_MODEL, STATE_FILE, STEP_DIR, CheckpointManager
from .metrics import read_metrics

WEIGHTS = "model.safetensors"
OBJECTIVE_WEIGHTS = "objective.safetensors"  # final/: the objective's own parameters
CHECKPOINT_OBJECTIVE_WEIGHTS = "model_1.safetensors"  # checkpoints: accelerate's name for the second module
MODEL_CONFIG = "model_config.json"
CONFIG = "config.yaml"
SUMMARY = "metrics.json"  # final/: the validation metrics and where training stopped
SOURCE = "source.json"  # init/: where imported weights came from
_PREFIXES = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers that save_state(unwrap=False) may leave


def save_weights(module, path, metadata: dict):
    """safetensors.torch.save_model, with the header's __metadata__ in sorted key order: safetensors serializes it
    from a Rust HashMap (random order per process), which would make the same weights different bytes."""
    save_model(module, str(path), metadata=metadata)
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        header = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items())), **header}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()  # as compact as serde's
        f.seek(8)
        f.write(text.ljust(n))


class RunDir:
    CONFIG, MODEL_CONFIG, TOKENIZER, METRICS = CONFIG, MODEL_CONFIG, "tokenizer", "metrics.jsonl"
    CHECKPOINTS, FINAL, INIT, TENSORBOARD, WANDB = "checkpoints", "final", "init", "tensorboard", "wandb"
    FINETUNE, FINETUNE_RESULTS = "finetune", "results.json"
    LOCK = ".lock"  # not an entry: --overwrite keeps it (run_lock.py)
    SCORE = "score"  # RUN/score/results.json: zero-shot minimal pairs from `pretrain score`
    # what a run directory may hold; --overwrite deletes these (and leftovers of killed writes)
    ENTRIES = (CONFIG, MODEL_CONFIG, METRICS, CHECKPOINTS, FINAL, TOKENIZER, WANDB, TENSORBOARD, FINETUNE, SCORE)

    def __init__(self, path):
        self.path = Path(path)
        self.config, self.model_config = self.path / self.CONFIG, self.path / self.MODEL_CONFIG
        self.tokenizer, self.metrics = self.path / self.TOKENIZER, self.path / self.METRICS
        self.checkpoints, self.final, self.init = (self.path / n for n in (self.CHECKPOINTS, self.FINAL, self.INIT))
        self.finetune = self.path / self.FINETUNE

    def __str__(self) -> str:
        return str(self.path)

    # ---- state ------------------------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        return any(p.exists() for p in (self.config, self.metrics, self.checkpoints, self.final))

    def finished(self) -> bool:
        return (self.final / WEIGHTS).is_file()

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every complete checkpoint, oldest first."""
        return CheckpointManager(self.checkpoints).complete()

    def latest_checkpoint(self) -> Path | None:
        return CheckpointManager(self.checkpoints).latest()

    # ---- writing ----------------------------------------------------------------------------------------------
    def clear(self):
        """--overwrite: remove the previous run's entries (nothing else the directory holds)."""
        for name in self.ENTRIES:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        for leftover in self.path.glob(".*.tmp-*"):  # of writes a kill interrupted
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink()

    def write_config(self, yaml_text: str):
        write_text_atomic(self.config, yaml_text)

    def write_model_config(self, model_cfg: ModelConfig):
        write_json_atomic(self.model_config, model_cfg.to_dict())

    def save_tokenizer(self, tokenizer):
        with atomic_dir(self.tokenizer) as tmp:
            tokenizer.save_pretrained(str(tmp))

    def save_final(self, model, model_cfg: ModelConfig, tokenizer, yaml_text: str, summary: dict,
                   objective_module=None):
        """final/: everything needed to use, evaluate, export or continue the trained model."""
        with atomic_dir(self.final) as tmp:
            save_weights(model, tmp / WEIGHTS, metadata={"format": "pt", "arch": model_cfg.arch})
            if objective_module is not None:
                save_weights(objective_module, tmp / OBJECTIVE_WEIGHTS, metadata={"format": "pt"})
            (tmp / MODEL_CONFIG).write_text(json.dumps(model_cfg.to_dict(), indent=2))
            tokenizer.save_pretrained(str(tmp))
            (tmp / CONFIG).write_text(yaml_text)
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))

    # ---- reading ----------------------------------------------------------------------------------------------
    def read_metrics(self, up_to_step: int | None = None) -> list[dict]:
        return read_metrics(self.metrics, up_to_step)

    def tokenizer_dir(self, weights_dir: Path | None = None) -> Path | None:
        """Where the run's tokenizer is saved: tokenizer/, else beside the weights, else in final/ (None: nowhere)."""
        return next((d for d in (self.tokenizer, weights_dir, self.final) if d is not None and
                     ((d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file())), None)

    def read_tokenizer(self, weights_dir: Path | None = None):
        """The run's tokenizer (tokenizer/, else the one saved beside the weights); a broken one is one error."""
        where = self.tokenizer_dir(weights_dir)
        if where is None:
            raise UserError(f"no tokenizer in {self.tokenizer}; restore the run's tokenizer/ folder")
        try:
            return load_tokenizer(str(where))
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot load the tokenizer in {where} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''}); restore the run's tokenizer/") \
                from None

    def read_model_config(self, weights_dir: Path) -> ModelConfig | None:
        """The model config saved beside the weights or in the run (None when neither has one)."""
        for path in (weights_dir / MODEL_CONFIG, self.model_config, self.final / MODEL_CONFIG,
                     self.init / MODEL_CONFIG):
            if path.is_file():
                try:
                    return ModelConfig.from_dict(read_json(path))
                except (TypeError, ValueError) as e:
                    raise UserError(f"{path} is not a valid model config ({e}); restore it from the run") from None
        return None

    def finetune_results(self) -> dict[str, dict]:
        """task -> the results `pretrain finetune` wrote for this run (unreadable files are skipped)."""
        out = {}
        for path in sorted(self.finetune.glob(f"*/{self.FINETUNE_RESULTS}")):
            try:
                out[path.parent.name] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        return out

    def weights_dir(self, checkpoint: str | None = None) -> tuple[Path, str]:
        """(directory holding model.safetensors, label): --checkpoint step_N / N / a path, else final/, else
        init/."""
        if checkpoint:
            candidates = [Path(checkpoint)] if Path(checkpoint).is_absolute() else \
                [self.checkpoints / checkpoint, self.path / checkpoint, Path(checkpoint)]
            if checkpoint.isdigit():
                candidates.insert(0, self.checkpoints / f"step_{checkpoint}")
            for path in candidates:
                if path.is_dir():
                    if STEP_DIR.match(path.name) and not (path / STATE_FILE).is_file():
                        raise UserError(f"checkpoint {path} is incomplete (no {STATE_FILE}: its save was "
                                        f"interrupted); pick another with --checkpoint (available: "
                                        f"{self._available()})")
                    if not has_weights(path):
                        raise UserError(f"no {WEIGHTS} in {path}; pick another with --checkpoint (available: "
                                        f"{self._available()})")
                    return path, path.name
            raise UserError(f"checkpoint {checkpoint!r} not found in {self.checkpoints}; available: "
                            f"{self._available()}")
        for where in (self.final, self.init):
            if (where / WEIGHTS).is_file():
                return where, where.name
        found = self.complete_checkpoints()
        raise UserError(f"{self.path} has no final model (the run did not finish)" +
                        (f"; export a checkpoint with --checkpoint {found[-1][1].name} (available: "
                         f"{self._available()})" if found else "; train it to the end first"))

    def _available(self) -> str:
        names = [p.name for _, p in self.complete_checkpoints()]
        if self.finished():
            names.append("final (the default)")
        return ", ".join(names) or "none"


def objective_weights(weights_dir: Path) -> Path | None:
    """The objective's own parameters saved with these weights (final/ or a checkpoint), if any."""
    for name in (OBJECTIVE_WEIGHTS, CHECKPOINT_OBJECTIVE_WEIGHTS):
        if (Path(weights_dir) / name).is_file():
            return Path(weights_dir) / name
    return None


def read_yaml(path: Path) -> dict:
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


def has_weights(folder: Path) -> bool:
    """Whether a weights folder or checkpoint holds the model, whole or as FSDP shards."""
    return (Path(folder) / WEIGHTS).is_file() or (Path(folder) / SHARDED_MODEL).is_dir()


def load_state_dict(path: Path) -> dict:
    """Tensors of a safetensors file (never pickle), or of the FSDP shards saved in its place, wrapper prefixes
    stripped."""
    sharded = Path(path).parent / SHARDED_MODEL
    if not Path(path).exists() and sharded.is_dir():
        return _gather_shards(sharded)
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


def _gather_shards(folder: Path) -> dict:
    """The whole model from an FSDP checkpoint's torch.distributed.checkpoint shards, in this one process (any
    number of processes saved them), through a tensors-only file."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            dcp_to_torch_save(str(folder), str(Path(tmp) / "whole.pt"))
            state = torch.load(Path(tmp) / "whole.pt", map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"cannot read the sharded weights {folder} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]}); the checkpoint is corrupted: pick another") from None
    return {key.removeprefix("model."): value for key, value in _flat(state).items()}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def load_weights_into(module, path: Path):
    """Load a safetensors file into `module`, refusing (one line) weights of another shape or set of names."""
    state = load_state_dict(path)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        shown = (missing + unexpected + wrong)[:3]
        raise UserError(f"weights {path} do not fit the run's model config ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors, e.g. {', '.join(shown)}); "
                        f"was the run directory changed?")
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
