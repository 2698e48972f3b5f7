"""`pretrain eval RUN`: the run's model (final/ or --checkpoint), its tokenizer and objective, the validation blocks
rebuilt from its config.yaml (the packing cache makes that instant), and the validation metrics."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.corpus import quiet_datasets
from ..errors import ConfigError
from .build import corpus_blocks
from .evaluation import validation_metrics
from .hardware import resolve_precision
from .run_dir import RunDir
from .saved_run import load_run_model, load_run_spec


def evaluate_run(run_dir: str, batches: int | None = None, checkpoint: str | None = None,
                 document_masking: bool | None = None, objective_options: dict | None = None) -> dict:
    """document_masking: evaluate with (True) or without (False) attention kept inside documents; None: as the
    run trained. objective_options: objective options changed for the evaluation (ModernBERT trains at 30% masking
    and is scored at 15%: {"mlm_probability": 0.15})."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise ConfigError(f"{run} is not a run directory (no {run.CONFIG}); pass the --run.output_dir of a run")
    model, model_cfg, tokenizer, record = load_run_model(run.path, checkpoint)
    if document_masking is not None:
        record.config.objective.document_masking = document_masking
    if objective_options:
        record.config.objective.options = {**(record.config.objective.options or {}), **objective_options}
    spec = load_run_spec(record, tokenizer, model_cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for module in (model, spec.objective.module):
        if module is not None:
            module.to(device)
    cfg = record.config
    with quiet_datasets():
        _, val_blocks = corpus_blocks(cfg, tokenizer, spec.block_length)
    metrics = validation_metrics(model, spec.objective, val_blocks, cfg.run.batch_size, cfg.run.seed, batches,
                                 precision=resolve_precision(cfg.run.mixed_precision))
    return {"run_dir": str(Path(run_dir)), "weights": str(record.weights),
            "document_masking": cfg.objective.document_masking, **metrics}
