"""`pretrain eval RUN`: the run's model (final/ or --checkpoint, loaded as export and attention load it), its
tokenizer, objective and validation blocks rebuilt from config.yaml, and the validation metrics."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from .config import ConfigError, parse_config


class _SingleProcess:
    """The few Accelerator members build_blocks() and evaluate() use, for one process."""
    process_index, num_processes, is_main_process = 0, 1, True

    def __init__(self, device):
        self.device = device

    def autocast(self):
        return nullcontext()

    def wait_for_everyone(self):
        pass


def evaluate_run(run_dir: str, batches: int | None = None, checkpoint: str | None = None) -> dict:
    import torch

    from objectives import build_objective

    from .evaluate import evaluate
    from .run import build_blocks
    from .run_dir import load_run_model

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run} is not a run directory (no config.yaml); pass the --run.output_dir of a run")
    model, model_cfg, tokenizer, info = load_run_model(run, checkpoint)
    cfg = parse_config([], None, "pretrain eval", saved_config=str(run / "config.yaml"))
    if torch.cuda.is_available():
        model = model.cuda()
    objective = build_objective(cfg.objective.name, tokenizer, **cfg.objective.options)
    objective.check_arch(model_cfg.arch)
    single = _SingleProcess(next(model.parameters()).device)
    _, val_blocks = build_blocks(cfg, tokenizer, objective.block_length(cfg.run.seq_len), single)
    metrics = evaluate(model, objective, val_blocks, cfg.run.batch_size, cfg.run.seed, batches, single)
    return {"run_dir": str(run), "weights": str(info["weights"]), **metrics}
