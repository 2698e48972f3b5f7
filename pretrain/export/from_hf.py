"""A transformers model (Hub id or folder) -> a run directory our trainer continues from:
`pretrain export --from-hub ID_OR_PATH --out RUN [--objective NAME]`.

The run's config.yaml starts from the imported weights (`model.init_from: RUN/init`) with the exact architecture,
its tokenizer/ is the model's, and its objective the family's default; continue pretraining with
`pretrain train --run.output_dir RUN --resume`.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from transformers import AutoTokenizer

from models import get_family, num_params
from models.convert import from_transformers
from objectives import objective_class

from ..errors import UserError
from ..train.config import parse_config, to_yaml
from ..train.run_dir import MODEL_CONFIG, SOURCE, WEIGHTS, RunDir, save_weights
from .folder import check_out_dir, usage_error, write_folder
from .to_hf import resolve_family


def _say(message: str):
    print(message, flush=True)


def _load_hf(source: str):
    """(our model, tokenizer) from a transformers folder or Hub id: safetensors only, no remote code."""
    local = Path(source).exists()
    try:
        model = from_transformers(source)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except UserError:
        raise
    except Exception as e:  # not found, offline, no safetensors, unsupported model_type, ...: one line
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        hint = "check the folder holds config.json, model.safetensors and tokenizer files" if local else \
            "check the id, the network (HF_HUB_OFFLINE must be unset) and access rights"
        raise UserError(f"cannot load {source!r} as a transformers model ({reason}); {hint}") from None
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise UserError(f"{source!r} has no fast tokenizer (tokenizer.json); convert it with "
                        f"transformers' convert_slow_tokenizer first")
    return model, tokenizer


def run_config_yaml(family: str, model_cfg, out: Path, objective: str) -> str:
    """config.yaml of an imported run: the exact architecture (every model field), init_from the imported weights,
    the objective, the run's own tokenizer; every other section at its defaults."""
    run = RunDir(out)
    tree = {"model": {"preset": family, **model_cfg.to_dict(), "init_from": str(run.init.resolve())},
            "objective": {"name": objective, "options": {}},
            "tokenizer": {"path": str(run.tokenizer.resolve())},
            "run": {"output_dir": str(out), "seq_len": min(128, model_cfg.max_seq_len)}}
    return to_yaml(parse_config(["--config", yaml.safe_dump(tree, sort_keys=False)], None, "pretrain export"))


def _objective_for(family: str, model_cfg, objective: str | None) -> str:
    objective = objective or get_family(family).default_objective
    try:
        objective_class(objective).check_model(model_cfg)
    except UserError as e:
        raise usage_error(f"--objective: {e}") from None
    return objective


def import_hub(source: str, out, *, overwrite: bool = False, objective: str | None = None, log=_say) -> Path:
    """A transformers model (Hub id or folder) -> a run directory our trainer continues from."""
    out = Path(out)
    check_out_dir(out, overwrite, protect=Path(source) if Path(source).exists() else None)
    model, tokenizer = _load_hf(source)
    model_cfg = model.config
    family = resolve_family(model_cfg)
    objective = _objective_for(family, model_cfg, objective)
    if len(tokenizer) > model_cfg.vocab_size:
        raise UserError(f"{source!r}: its tokenizer has {len(tokenizer)} tokens but the model only "
                        f"{model_cfg.vocab_size}; they do not belong together")
    config_text = run_config_yaml(family, model_cfg, out, objective)
    is_local = Path(source).exists()
    hf_class = get_family(family).hf_class
    source_info = {"source": str(Path(source).resolve()) if is_local else source, "hub": not is_local,
                   "family": family, "hf_class": hf_class}

    def write(tmp: Path):
        run = RunDir(tmp)
        run.init.mkdir()
        save_weights(model, run.init / WEIGHTS, metadata={"format": "pt", "arch": model_cfg.arch})
        for where in (run.model_config, run.init / MODEL_CONFIG):
            where.write_text(json.dumps(model_cfg.to_dict(), indent=2))
        (run.init / SOURCE).write_text(json.dumps(source_info, indent=2))
        tokenizer.save_pretrained(str(run.tokenizer))
        run.config.write_text(config_text)

    write_folder(out, write)
    log(f"imported {source} ({hf_class}, {num_params(model_cfg):,} parameters) into {out}; continue "
        f"pretraining with: pretrain train --run.output_dir {out} --resume")
    return out
