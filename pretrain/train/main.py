"""`pretrain train` and the recipes: parse (recipe defaults < saved config when resuming < --config < flags), build
the run (pretrain/train/build.py), train, save final/, print the run directory, the validation metrics and a
sample.

    train_main(defaults, argv, prog) -> result dict        run_training(cfg) -> result dict
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..inspect.sample import sample
from .build import build_model, build_run, make_accelerator
from .config import TrainConfig, load_config, parse_config, saved_form, to_yaml
from .config_summary import summary_lines
from .decay import inherit_metrics, starts_here
from .engines import engine_note
from .run_dir import RunDir
from .trackers import flat_config, tracker_setup
from .trainer import Trainer


def train_main(defaults: dict | None = None, argv: list[str] | None = None, prog: str | None = None) -> dict:
    prog = prog or (os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else "pretrain train")
    cfg = load_config(argv if argv is not None else sys.argv[1:], defaults, prog)
    baseline = parse_config([], defaults, prog, check=False)
    return run_training(cfg, baseline, "the recipe's defaults" if defaults else "the defaults")


def run_training(cfg: TrainConfig, baseline: TrainConfig | None = None, origin: str = "the defaults") -> dict:
    """Train one run. baseline: the config the start-up summary compares against (None: `pretrain train`'s
    defaults), named `origin` there."""
    run_path = Path(cfg.run.output_dir)
    log_with, init_kwargs = tracker_setup(cfg.run.report_to, run_path, cfg.run.name or run_path.name,
                                          is_main=is_main_by_environment())
    acc = make_accelerator(cfg, run_path, log_with)
    if acc.is_main_process:
        baseline = baseline if baseline is not None else parse_config([], None, check=False)
        print("\n".join([f"run directory: {run_path}",
                         *summary_lines(cfg, baseline, str(RunDir(run_path).config), origin)]), flush=True)
    run = build_run(cfg, acc)
    try:  # the run directory is this run's until it returns or dies (pretrain/train/run_lock.py)
        return _train(cfg, acc, run, log_with, init_kwargs)
    finally:
        if run.lock is not None:
            run.lock.release()


def _train(cfg: TrainConfig, acc, run, log_with, init_kwargs) -> dict:
    run_path = run.run_dir.path
    spec = run.spec
    model = build_model(cfg, spec.model_cfg, run.init, run.plan)
    if acc.is_main_process:
        print(f"model: {cfg.model.preset} ({spec.model_cfg.arch}), {sum(p.numel() for p in model.parameters()):,} "
              f"parameters, vocab {spec.model_cfg.vocab_size}; objective {spec.objective.name}; "
              f"{_count(run.train_blocks)} train / {len(run.val_blocks):,} val blocks of {spec.block_length} "
              f"tokens; {acc.num_processes} process(es) on {acc.device.type}{engine_note(acc)}, precision "
              f"{acc.mixed_precision}",
              flush=True)

    trainer = Trainer(cfg, model, spec.objective, spec.block_length, run.train_blocks, run.val_blocks,
                      run.run_dir.path, acc, run.state)
    trainer.packing = run.packing
    if acc.is_main_process and cfg.objective.document_masking:
        kernel = "FlexAttention block masks" if trainer.attention_kernel == "flex" else "SDPA with a boolean mask"
        print(f"document masks: {kernel} (run.attention_kernel {cfg.run.attention_kernel})", flush=True)
    if run.resume_from is not None:
        trainer.resume(run.resume_from)  # a corrupted checkpoint stops here, with the run directory untouched
        if acc.is_main_process:
            if starts_here(run.run_dir, run.resume_from):
                inherit_metrics(run.run_dir, run.resume_from)
                print(f"decay: from {run.resume_from} (step {trainer.step}), {cfg.optim.decay_steps} steps of "
                      f"{cfg.optim.decay_shape} decay to step {cfg.run.max_steps}", flush=True)
            run.run_dir.write_config(to_yaml(saved_form(cfg)))
            run.run_dir.write_model_config(spec.model_cfg)
    if run.lock is not None:
        run.lock.record()  # only once everything passed: a refused command leaves even the lock file as it was
    if log_with:
        acc.init_trackers(cfg.run.project, config=flat_config(cfg), init_kwargs=init_kwargs)
    try:
        metrics = trainer.train(run.resume_from)
    finally:
        if log_with:
            acc.end_training()
    result = {"run_dir": str(run_path), "val": metrics, "step": trainer.step, "tokens": trainer.tokens}
    if "stopped_at" in metrics:
        return result
    model = trainer.whole_model()  # every process: under FSDP this gathers the shards
    if acc.is_main_process:
        run.run_dir.save_final(model, spec.model_cfg, run.tokenizer, to_yaml(saved_form(cfg)),
                               {"val": metrics, "step": trainer.step, "tokens": trainer.tokens,
                                "elapsed": trainer.elapsed}, trainer.own_module)
        _summary(run, metrics, trainer, model)
    acc.wait_for_everyone()
    return result


def _count(blocks) -> str:
    return f"{len(blocks):,}" if hasattr(blocks, "__len__") else "streamed"


def is_main_by_environment() -> bool:
    """Whether this is the main process, from the launcher's environment (before any Accelerator exists)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def _summary(run, metrics: dict, trainer, model):
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    print(f"\ndone: {trainer.step} steps, {trainer.tokens:,} tokens, {trainer.elapsed:.0f}s")
    print(f"run directory: {run.run_dir} (final model in {run.run_dir.final})")
    print(f"validation: {shown}")
    if run.cfg.run.sample:
        try:
            print(sample(model, run.tokenizer, run.spec.objective, run.val_blocks, seed=run.cfg.run.seed))
        except Exception as e:  # a sample is a courtesy: never fail a finished run over it
            print(f"(sample failed: {type(e).__name__}: {e})")
