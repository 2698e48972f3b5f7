"""Build everything from a config and train: the shared entry of the recipes and `pretrain train`.

    main(defaults, argv)   parse (recipe defaults < saved config when resuming < --config < flags), prepare the run
                           directory, tokenizer, objective, model, packed blocks, Accelerator; train; save final/;
                           print the run directory, the validation metrics and a sample.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import timedelta
from pathlib import Path

from .checkpoint import CheckpointManager, fsync_tree, write_json_atomic, write_text_atomic
from .config import ConfigError, TrainConfig, config_hash, parse_config, resolve_model_config, to_yaml
from .errors import UserError
from .tokenizer import tokenizer_fingerprint

# what a run directory may hold; --overwrite deletes only these
RUN_ENTRIES = ("config.yaml", "model_config.json", "metrics.jsonl", "checkpoints", "final", "tokenizer", "wandb", "tensorboard",
               "final.tmp", "tokenizer.tmp")


def main(defaults: dict | None = None, argv: list[str] | None = None, prog: str | None = None) -> dict:
    prog = prog or (os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else "pretrain train")
    cfg = load_config(argv if argv is not None else sys.argv[1:], defaults, prog)
    return train(cfg)


def load_config(argv, defaults, prog) -> TrainConfig:
    cfg = parse_config(argv, defaults, prog, check=False)
    saved = Path(cfg.run.output_dir) / "config.yaml"
    if cfg.run.resume == "auto" and saved.is_file():  # the run's own config, under anything given now
        cfg = parse_config(argv, defaults, prog, saved_config=str(saved))
        cfg.run.resume = "auto"
        cfg.run.overwrite = False
        return cfg
    return parse_config(argv, defaults, prog)


# ---- the run directory -----------------------------------------------------------------------------------------
def holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in ("config.yaml", "metrics.jsonl", "checkpoints", "final"))


def prepare_run_dir(cfg: TrainConfig, is_main: bool) -> Path | None:
    """Refuse / clear / resume. Returns the checkpoint to resume from (None = start from step 0)."""
    run_dir = Path(cfg.run.output_dir)
    if cfg.run.resume == "auto":
        return CheckpointManager(run_dir).latest()
    if holds_run(run_dir):
        if not cfg.run.overwrite:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to "
                              f"replace it, or choose another --run.output_dir")
        if is_main:
            for name in RUN_ENTRIES:
                path = run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    return None


def check_writable(run_dir: Path):
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"run directory {run_dir} is not writable ({e.strerror or e}); choose another "
                        f"--run.output_dir") from None


# ---- building blocks ---------------------------------------------------------------------------------------------
def resolve_precision(choice: str) -> str:
    import torch

    from .logging_utils import cpu_has_native_bf16

    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def make_accelerator(cfg: TrainConfig, run_dir: Path, log_with):
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

    import torch

    precision = resolve_precision(cfg.run.mixed_precision)
    # without an accelerator Accelerate only forms a multi-process (gloo) group when told it runs on CPU:
    # that is what makes `torchrun --nproc_per_node 2` really data-parallel here
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else \
        torch.cuda.is_available()
    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "tensorboard"))
    try:
        return Accelerator(cpu=not has_accelerator, mixed_precision=precision, gradient_accumulation_steps=cfg.run.grad_accum,
                           log_with=log_with, project_config=project,
                           kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.run.dist_timeout))])
    except ValueError as e:
        raise ConfigError(f"run.mixed_precision {precision}: {e}".splitlines()[0]) from None


def build_tokenizer(cfg: TrainConfig, run_dir: Path, roles, accelerator):
    """The run's tokenizer: run_dir/tokenizer when it exists (resume, other ranks), else trained / loaded per the
    config by the main process and saved there."""
    from . import tokenizer as tok_mod

    saved = run_dir / "tokenizer"
    with accelerator.main_process_first():
        if saved.is_dir():
            tokenizer = tok_mod.load_tokenizer(str(saved))
        else:
            tokenizer = tok_mod.build_tokenizer(cfg.tokenizer, cfg.data, roles, out_dir=None,
                                                is_main_process=accelerator.is_main_process, seed=cfg.data.seed)
            if accelerator.is_main_process:  # atomically: a run killed while saving never leaves half a tokenizer
                tmp = run_dir / "tokenizer.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tokenizer.save_pretrained(str(tmp))
                fsync_tree(tmp)
                os.rename(tmp, saved)
    return tok_mod.ensure_special_tokens(tokenizer, roles)


def check_with_tokenizer(cfg: TrainConfig, tokenizer, model_cfg):
    if model_cfg.vocab_size < len(tokenizer):
        raise ConfigError(f"model.vocab_size {model_cfg.vocab_size} is smaller than the tokenizer's {len(tokenizer)} "
                          f"tokens; remove model.vocab_size (it defaults to the tokenizer's) or raise it")


def build_blocks(cfg: TrainConfig, tokenizer, block_length: int, accelerator):
    from . import packing

    cache = Path(cfg.run.cache_dir) if cfg.run.cache_dir else Path.home() / ".cache" / "unified_pretrain"
    return packing.build_blocks(cfg.data, tokenizer, block_length, str(cache),
                                is_main_process=accelerator.is_main_process,
                                wait_for_main=accelerator.wait_for_everyone,
                                rank=accelerator.process_index, world_size=accelerator.num_processes)


def build_model(cfg: TrainConfig, model_cfg):
    from models import Transformer

    model = Transformer(model_cfg)
    if cfg.model.init_from:  # continued pretraining: a run's final/ or init/, a transformers folder or Hub id
        from .run_dir import init_from_pretrained

        init_from_pretrained(model, cfg.model.init_from)
    return model


def check_resume(saved: dict, expected: dict, path: Path):
    old, new = saved.get("model") or {}, expected.get("model") or {}
    differing = [f"{k} {old[k]!r} -> {new.get(k)!r}" for k in old
                 if k not in ("dropout", "attention_dropout") and old[k] != new.get(k)]
    if differing:
        raise ConfigError(f"checkpoint {path} holds a different model ({', '.join(differing[:4])}); resume with "
                          f"the run's own model settings or start a new --run.output_dir")
    for key, what in (("arch", "architecture"), ("vocab_size", "vocabulary size"), ("tokenizer", "tokenizer"),
                      ("objective", "objective")):
        if key in saved and saved[key] != expected.get(key):
            raise ConfigError(f"checkpoint {path} was trained with {what} {saved[key]!r} but the config now gives "
                              f"{expected.get(key)!r}; resume with the run's own config or start a new "
                              f"--run.output_dir")


# ---- train -------------------------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> dict:
    import torch

    from objectives import OBJECTIVES, build_objective

    from .data_order import mix_seed

    from .logging_utils import tracker_setup
    from .trainer import Trainer

    run_dir = Path(cfg.run.output_dir)
    name = cfg.run.name or run_dir.name
    log_with, init_kwargs = tracker_setup(cfg.run.report_to, run_dir, name, is_main=_is_main_env())
    acc = make_accelerator(cfg, run_dir, log_with)
    resume_from = prepare_run_dir(cfg, acc.is_main_process)
    acc.wait_for_everyone()
    if acc.is_main_process:
        check_writable(run_dir)
        if resume_from is None:  # when resuming, only once the checkpoint has loaded: a failed resume changes nothing
            write_text_atomic(run_dir / "config.yaml", to_yaml(saved_form(cfg)))
        print(f"run directory: {run_dir}\n--- config ---\n{to_yaml(cfg)}--------------", flush=True)
    acc.wait_for_everyone()

    objective_cls = OBJECTIVES[cfg.objective.name]
    tokenizer = build_tokenizer(cfg, run_dir, objective_cls.special_tokens, acc)
    model_cfg = resolve_model_config(cfg, len(tokenizer), _token_ids(tokenizer))
    check_with_tokenizer(cfg, tokenizer, model_cfg)
    try:
        objective = build_objective(cfg.objective.name, tokenizer, **cfg.objective.options)
    except (TypeError, ValueError) as e:  # unknown or invalid options: a usage mistake
        raise ConfigError(" ".join(str(e).split())) from None
    objective.check_arch(model_cfg.arch)
    run_state = {"config_hash": config_hash(cfg), "arch": model_cfg.arch, "vocab_size": model_cfg.vocab_size,
                 "tokenizer": tokenizer_fingerprint(tokenizer), "objective": objective.name,
                 "model": model_cfg.to_dict()}
    if resume_from is not None:  # before the (slow) packing: a mismatched checkpoint is refused at once
        check_resume(CheckpointManager.read_state(resume_from), run_state, resume_from)
    block_length = objective.block_length(cfg.run.seq_len)
    train_blocks, val_blocks = build_blocks(cfg, tokenizer, block_length, acc)
    torch.manual_seed(mix_seed(cfg.run.seed, "init"))  # the same initial weights for the same seed
    model = build_model(cfg, model_cfg)
    if acc.is_main_process and resume_from is None:
        write_json_atomic(run_dir / "model_config.json", model_cfg.to_dict())
    if acc.is_main_process:
        print(f"model: {cfg.model.preset} ({model_cfg.arch}), {sum(p.numel() for p in model.parameters()):,} parameters, vocab "
              f"{model_cfg.vocab_size}; objective {objective.name}; {_count(train_blocks)} train / "
              f"{len(val_blocks):,} val blocks of {block_length} tokens; {acc.num_processes} process(es) on "
              f"{acc.device.type}, precision {acc.mixed_precision}", flush=True)

    trainer = Trainer(cfg, model_cfg, model, objective, train_blocks, val_blocks, run_dir, acc, run_state)
    if resume_from is not None:
        trainer.resume(resume_from)  # a corrupted checkpoint stops here, with the run directory untouched
        if acc.is_main_process:
            write_text_atomic(run_dir / "config.yaml", to_yaml(saved_form(cfg)))
            write_json_atomic(run_dir / "model_config.json", model_cfg.to_dict())
    if log_with:
        acc.init_trackers(cfg.run.project, config=_flat_config(cfg), init_kwargs=init_kwargs)
    try:
        metrics = trainer.train(resume_from)
    finally:
        if log_with:
            acc.end_training()
    result = {"run_dir": str(run_dir), "val": metrics, "step": trainer.step, "tokens": trainer.tokens}
    if "stopped_at" in metrics:
        return result
    if acc.is_main_process:
        save_final(run_dir, trainer.module, model_cfg, tokenizer, cfg, metrics, trainer)
        report(run_dir, metrics, trainer, tokenizer, objective, val_blocks, cfg)
    acc.wait_for_everyone()
    return result


def _count(blocks) -> str:
    return f"{len(blocks):,}" if hasattr(blocks, "__len__") else "streamed"


def saved_form(cfg: TrainConfig) -> TrainConfig:
    """The config as saved in the run directory: without this invocation's one-off controls (--resume,
    --overwrite, stop_at_step), so a resumed run does not inherit them."""
    import copy

    saved = copy.deepcopy(cfg)
    saved.run.resume, saved.run.overwrite, saved.run.stop_at_step = "no", False, None
    return saved


def _is_main_env() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def _token_ids(tokenizer) -> dict:
    return {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id,
            "bos": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id}


def _flat_config(cfg: TrainConfig) -> dict:
    import dataclasses

    flat = {}
    for section, values in dataclasses.asdict(cfg).items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def save_final(run_dir: Path, module, model_cfg, tokenizer, cfg, metrics: dict, trainer):
    """run_dir/final: model.safetensors + model_config.json + tokenizer + config.yaml + metrics.json (atomic)."""
    from safetensors.torch import save_model

    tmp, final = run_dir / "final.tmp", run_dir / "final"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(module, str(tmp / "model.safetensors"), metadata={"format": "pt", "arch": model_cfg.arch})
    (tmp / "model_config.json").write_text(json.dumps(model_cfg.to_dict(), indent=2))
    tokenizer.save_pretrained(str(tmp))
    (tmp / "config.yaml").write_text(to_yaml(saved_form(cfg)))
    write_json_atomic(tmp / "metrics.json", {"val": metrics, "step": trainer.step, "tokens": trainer.tokens,
                                             "elapsed": trainer.elapsed})
    fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)


def report(run_dir, metrics, trainer, tokenizer, objective, val_blocks, cfg):
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    print(f"\ndone: {trainer.step} steps, {trainer.tokens:,} tokens, {trainer.elapsed:.0f}s")
    print(f"run directory: {run_dir} (final model in {run_dir / 'final'})")
    print(f"validation: {shown}")
    if cfg.run.sample:
        from .sample import sample

        try:
            print(sample(trainer.module, tokenizer, objective, val_blocks, seed=cfg.run.seed))
        except Exception as e:  # a sample is a courtesy: never fail a finished run over it
            print(f"(sample failed: {type(e).__name__}: {e})")
