"""What a comparison of objectives is: the runs, the shared corpus / tokenizer / training settings, the budget and
the yardstick, parsed from YAML and dotted overrides like the training config.

    pretrain compare [CONFIG.yaml] [--budget.max_tokens N | --budget.max_flops F | --budget.max_time S]
                     [--seeds N] [--only a,b] ...
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from jsonargparse import ActionConfigFile, ArgumentParser

from ..data.corpus import DataConfig
from ..data.tokenizer import TokenizerConfig
from ..errors import ConfigError, UserError
from ..inspect.attention import DEFAULT_TEXT
from ..train.config import ModelSection, ObjectiveSection, one_line_parse_error


@dataclass
class BudgetSection:
    """The same budget for every run: corpus tokens (max_tokens), training FLOPs (max_flops: each run trains the
    optimizer steps its expected FLOPs per step fit in, so tokens differ) and/or seconds of training (max_time).
    Any combination: a run stops at the first one reached."""
    max_tokens: Optional[int] = 250_000
    max_time: Optional[float] = None
    max_flops: Optional[float] = None


@dataclass
class YardstickSection:
    """Whole-word cloze on held-out windows (see pretrain/compare/yardstick.py)."""
    window: int = 64
    n_windows: int = 400
    min_context: int = 16
    min_right: int = 8
    seed: int = 0


@dataclass
class DownstreamSection:
    """Probe and fine-tune every trained run on one labelled task (pretrain/compare/downstream.py)."""
    task: Optional[str] = "stdlib-area"  # any `pretrain finetune --task`; null: no downstream evaluation
    mode: str = "both"  # both | finetune | probe
    seeds: int = 3  # fine-tuning seeds per run
    baseline: bool = True  # the random-init model of each run's architecture, same recipe
    encoder_pooling: bool = True  # encoder-decoders also read through their encoder's mean-pooled states
    bag_of_words: bool = True  # the bag-of-words baseline as a reference line
    recipe: dict[str, Any] = field(default_factory=dict)  # FinetuneRecipe overrides: epochs, lr, batch_size, ...
    task_options: dict[str, Any] = field(default_factory=dict)  # TaskSpec fields: validation, test, text_column, ...


@dataclass
class PairsSection:
    """Zero-shot minimal pairs for every run and its random init (pretrain/compare/pair_scores.py)."""
    enabled: bool = True
    corpus: int = 400  # pairs made from the held-out validation text by word perturbations
    grammar: int = 120  # pairs per phenomenon of the built-in English grammar set (0: none)
    files: list[str] = field(default_factory=list)  # more sources: BLiMP .jsonl, .csv / .jsonl, globs
    variant: str = "word"  # the hole of masked / span / infilling scores: word (Kauf & Ivanova 2023) or token
    seed: int = 0


@dataclass
class CompareConfig:
    """A comparison of objectives: the runs, the shared corpus / tokenizer / training settings and the budget."""
    output_dir: str = "runs/compare"
    runs: list[dict[str, Any]] = field(default_factory=list)  # recipes/compare_objectives.py has the built-in objectives
    only: Optional[str] = None  # comma-separated run names to keep, e.g. "bert+mlm,gpt2+clm"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="bpe", vocab_size=8000))
    budget: BudgetSection = field(default_factory=BudgetSection)
    # run-section values shared by every run (any pretrain.train.config.RunSection key); eval_every defaults to
    # about n_evals evaluations per run when the budget is in tokens
    train: dict[str, Any] = field(default_factory=lambda: {"seq_len": 128, "batch_size": 16, "eval_batches": 4,
                                                           "warmup_steps": 30})
    n_evals: int = 8
    # pretraining seeds per run: seed k (0..seeds-1) trains with run.seed = base seed + k (initialization, data
    # order, masks, dropout), in OUT/runs/<name> for k = 0 and OUT/runs/<name>-seed<k> for k >= 1
    seeds: int = 1
    # every run's objective.document_masking (None: each run's own setting)
    document_masking: Optional[bool] = None
    max_param_spread: float = 0.10
    yardstick: YardstickSection = field(default_factory=YardstickSection)
    downstream: DownstreamSection = field(default_factory=DownstreamSection)
    pairs: PairsSection = field(default_factory=PairsSection)
    attention_text: str = DEFAULT_TEXT
    attention_layer: int = -1
    samples: bool = True
    progress: bool = True


# ---- configuration ---------------------------------------------------------------------------------------------
def parse_compare_config(argv: list[str] | None, defaults: dict | None = None,
                         prog: str = "pretrain compare") -> CompareConfig:
    argv = list(argv or [])
    if argv and not argv[0].startswith("-"):  # `pretrain compare CONFIG.yaml ...`
        if not Path(argv[0]).is_file():
            raise ConfigError(f"config file {argv[0]} not found; pass a YAML file or --section.key options")
        argv = ["--config", argv[0]] + argv[1:]
    parser = ArgumentParser(prog=prog, description="Compare pretraining objectives on one corpus.",
                            exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the keys below")
    parser.add_class_arguments(CompareConfig, as_group=False, fail_untyped=False)
    if defaults:
        sections = {"data", "tokenizer", "budget", "yardstick", "downstream", "pairs"}
        flat = {}
        for key, value in defaults.items():  # dataclass sections by dotted keys; `train`, `runs` as whole values
            if key in sections and isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        parser.set_defaults(flat)
    try:
        ns = parser.parse_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(one_line_parse_error(str(e), prog)) from None
    ns.pop("config", None)
    cfg = parser.instantiate(ns)
    cfg = CompareConfig(**{f.name: cfg[f.name] for f in dataclasses.fields(CompareConfig)})
    check_compare_config(cfg)
    return cfg


def selected_runs(cfg: CompareConfig) -> list[dict]:
    runs = [dict(r) for r in cfg.runs]
    for r in runs:
        if "name" not in r:
            model, obj = r.get("model", {}), r.get("objective", {})
            r["name"] = f"{model.get('preset', ModelSection.preset)}+{obj.get('name', ObjectiveSection.name)}"
    if cfg.only:
        wanted = [w.strip() for w in cfg.only.split(",") if w.strip()]
        names = [r["name"] for r in runs]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise UserError(f"--only names unknown run(s) {', '.join(unknown)}; choose from {', '.join(names)}")
        runs = [r for r in runs if r["name"] in wanted]
    return runs


def check_compare_config(cfg: CompareConfig):
    runs = selected_runs(cfg)
    if len(runs) < 1:
        raise ConfigError("no runs to compare; list them under runs: in a --config YAML (see "
                          "recipes/compare_objectives.py for the built-in objectives)")
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names must be unique, got {names}; give each run a distinct name")
    for r in runs:
        unknown = set(r) - {"name", "model", "objective", "optim", "run"}
        if unknown:
            raise ConfigError(f"run {r['name']!r} has unknown key(s) {sorted(unknown)}; use name, model, objective, "
                              f"optim, run")
    b = cfg.budget
    if b.max_tokens is None and b.max_time is None and b.max_flops is None:
        raise ConfigError("no budget: set budget.max_tokens, budget.max_flops or budget.max_time (applied equally "
                          "to every run)")
    for key in ("max_tokens", "max_flops", "max_time"):
        value = getattr(b, key)
        if value is not None and not value > 0:
            raise ConfigError(f"budget.{key} must be positive, got {value}")
    if isinstance(cfg.seeds, bool) or not isinstance(cfg.seeds, int) or cfg.seeds < 1:
        raise ConfigError(f"seeds must be a whole number >= 1 (pretraining seeds per run), got {cfg.seeds!r}")
    d = cfg.downstream
    if d.mode not in ("both", "finetune", "probe"):
        raise ConfigError(f"downstream.mode {d.mode!r} is unknown; use both, finetune or probe")
    if isinstance(d.seeds, bool) or not isinstance(d.seeds, int) or d.seeds < 1:
        raise ConfigError(f"downstream.seeds must be a whole number >= 1 (fine-tuning seeds), got {d.seeds!r}")
    for key in ("max_steps", "max_tokens", "max_time", "output_dir"):
        if key in cfg.train:
            raise ConfigError(f"train.{key} is set by the comparison itself; use budget.max_tokens / "
                              f"budget.max_flops / budget.max_time and output_dir")
    folders = {}
    for r in runs:
        for k in range(cfg.seeds):
            folder = run_dir_name(r["name"], k)
            if folder in folders:
                raise ConfigError(f"runs {folders[folder]!r} and {r['name']!r} would share the folder runs/{folder}; "
                                  f"rename one")
            folders[folder] = r["name"]


def run_dir_name(name: str, seed_index: int = 0) -> str:
    """The folder of a run under OUT/runs/: <name> for the first seed (so a one-seed comparison keeps its folders
    and grows into a several-seed one), <name>-seed<k> for seed k >= 1."""
    folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return folder if seed_index == 0 else f"{folder}-seed{seed_index}"
