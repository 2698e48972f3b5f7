"""`pretrain eval RUN`: rebuild a finished run's tokenizer, objective and validation blocks from its config.yaml,
load its final weights (safetensors only) and print the validation metrics."""
from __future__ import annotations

import json
from pathlib import Path

from .config import ConfigError, parse_config
from .errors import UserError


def load_weights(model, path: Path):
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as e:
        raise UserError(f"cannot load weights {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if unexpected or [m for m in missing if not m.startswith("head.")]:
        raise UserError(f"weights {path} do not fit the run's model ({len(missing)} missing, {len(unexpected)} "
                        f"unexpected tensors); was the run directory changed?")


def evaluate_run(run_dir: str, batches: int | None = None, checkpoint: str | None = None) -> dict:
    import torch

    from models import ModelConfig, Transformer
    from objectives import build_objective

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run} is not a run directory (no config.yaml); pass the --run.output_dir of a run")
    weights_dir = Path(checkpoint) if checkpoint else run / "final"
    if not (weights_dir / "model.safetensors").is_file():
        raise UserError(f"no model.safetensors in {weights_dir}; finish the run (or pass --checkpoint "
                        f"{run}/checkpoints/step_N)")
    from .evaluate import evaluate
    from .run import build_blocks
    from .tokenizer import load_tokenizer

    cfg = parse_config([], None, "pretrain eval", saved_config=str(run / "config.yaml"))
    tokenizer = load_tokenizer(str(run / "tokenizer"))
    config_file = run / "final" / "model_config.json"
    if not config_file.is_file():
        raise UserError(f"no model_config.json in {run / 'final'}; the run did not finish")
    model_cfg = ModelConfig.from_dict(json.loads(config_file.read_text()))
    model = Transformer(model_cfg)
    load_weights(model, weights_dir / "model.safetensors")
    if torch.cuda.is_available():
        model = model.cuda()
    objective = build_objective(cfg.objective.name, tokenizer, **cfg.objective.options)
    objective.check_arch(model_cfg.arch)

    class _Single:  # the few Accelerator members evaluate() uses, for one process
        process_index, num_processes = 0, 1
        device = next(model.parameters()).device
        is_main_process = True

        @staticmethod
        def autocast():
            return torch.autocast(device_type=_Single.device.type, enabled=False)

        @staticmethod
        def wait_for_everyone():
            pass

        @staticmethod
        def main_process_first():
            from contextlib import nullcontext
            return nullcontext()

    _, val_blocks = build_blocks(cfg, tokenizer, objective.block_length(cfg.run.seq_len), _Single)
    metrics = evaluate(model, objective, val_blocks, cfg.run.batch_size, cfg.run.seed, batches, _Single)
    return {"run_dir": str(run), "weights": str(weights_dir), **metrics}
