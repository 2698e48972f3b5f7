"""Compare pretraining objectives on one corpus: one shared tokenizer, models of matched size, an equal budget.

    pretrain compare [CONFIG.yaml] [--budget.max_tokens N | --budget.max_time S] [--only bert+mlm,gpt2+clm] ...
    python recipes/compare_objectives.py [same options]          (accelerate launch works too)
    compare_main(argv, defaults=None) -> 0                        the Python entry point
    run_comparison(cfg: CompareConfig) -> dict                    results (also written to results.json)

Steps:
1. One tokenizer for every run (OUT/tokenizer): trained once with the union of the objectives' special tokens
   (mask token for MLM / infilling, BOS, 100 sentinels for span corruption), or loaded from tokenizer.path.
2. Each run in turn through the trainer's Python entry point (pretrain.run.main) with the tokenizer passed as
   tokenizer.path, into OUT/runs/<name>. A run whose final/ exists is skipped; one with a checkpoint is resumed;
   so an interrupted comparison continues where it stopped when the same command is given again. Under
   `accelerate launch` every process runs every run together (data parallel), one run after the other.
3. The report (main process): OUT/report.md, OUT/report.html (self-contained), OUT/results.json, PNG plots,
   the yardstick (pretrain.yardstick), samples and attention maps of every model.

Matched size: parameter counts must lie within `max_param_spread` (10%) of each other, checked before training.
The default four models (d_model 128, 4 heads, shared ~8.1k vocabulary, embeddings tied everywhere):
BERT 5 layers, GPT-2 5 layers, BART 2+2 layers, T5 2+2 layers (gated d_ff 384) - about 2.0-2.07M parameters each.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .corpus import DataConfig
from .errors import UserError
from .tokenizer import TokenizerConfig

_COMMON = {"d_model": 128, "n_heads": 4, "max_seq_len": 128, "dropout": 0.0}
DEFAULT_RUNS: list[dict] = [
    {"name": "bert+mlm", "model": {"preset": "bert", **_COMMON, "n_layers": 5, "d_ff": 512},
     "objective": {"name": "mlm", "options": {"mlm_probability": 0.15}}, "optim": {"lr": 1e-3}},
    {"name": "gpt2+clm", "model": {"preset": "gpt2", **_COMMON, "n_layers": 5, "d_ff": 512},
     "objective": {"name": "clm"}, "optim": {"lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.1}},
    {"name": "bart+infill", "model": {"preset": "bart", **_COMMON, "n_layers": 2, "d_ff": 512},
     "objective": {"name": "infill"}, "optim": {"lr": 1e-3}},
    {"name": "t5+span", "model": {"preset": "t5", **_COMMON, "n_layers": 2, "head_dim": 32, "d_ff": 384,
                                  "tie_embeddings": True},
     "objective": {"name": "span"}, "optim": {"lr": 2e-3}},
]


@dataclass
class BudgetSection:
    """The same budget for every run: corpus tokens (max_tokens) and/or seconds of training (max_time)."""
    max_tokens: Optional[int] = 250_000
    max_time: Optional[float] = None


@dataclass
class YardstickSection:
    """Whole-word cloze on held-out windows (see pretrain/yardstick.py)."""
    window: int = 64
    n_windows: int = 400
    min_context: int = 16
    min_right: int = 8
    seed: int = 0


@dataclass
class CompareConfig:
    """A comparison of objectives: the runs, the shared corpus / tokenizer / training settings and the budget."""
    output_dir: str = "runs/compare"
    runs: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_RUNS))
    only: Optional[str] = None  # comma-separated run names to keep, e.g. "bert+mlm,gpt2+clm"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="bpe", vocab_size=8000))
    budget: BudgetSection = field(default_factory=BudgetSection)
    # run-section values shared by every run (any pretrain.config.RunSection key); eval_every defaults to
    # about n_evals evaluations per run when the budget is in tokens
    train: dict[str, Any] = field(default_factory=lambda: {"seq_len": 128, "batch_size": 16, "eval_batches": 4,
                                                           "warmup_steps": 30})
    n_evals: int = 8
    max_param_spread: float = 0.10
    yardstick: YardstickSection = field(default_factory=YardstickSection)
    attention_text: str = "The function returns a new list containing the items of the sequence in sorted order."
    attention_layer: int = -1
    samples: bool = True
    progress: bool = True


# ---- configuration ---------------------------------------------------------------------------------------------
def parse_compare_config(argv: list[str] | None, defaults: dict | None = None,
                         prog: str = "pretrain compare") -> CompareConfig:
    import argparse

    from jsonargparse import ActionConfigFile, ArgumentParser

    from .config import ConfigError, _one_line_parse_error

    argv = list(argv or [])
    if argv and not argv[0].startswith("-"):  # `pretrain compare CONFIG.yaml ...`
        if not Path(argv[0]).is_file():
            raise ConfigError(f"config file {argv[0]} not found; pass a YAML file or --section.key options")
        argv = ["--config", argv[0]] + argv[1:]
    parser = ArgumentParser(prog=prog, description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the keys below")
    parser.add_class_arguments(CompareConfig, as_group=False, fail_untyped=False)
    if defaults:
        sections = {"data", "tokenizer", "budget", "yardstick"}
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
        raise ConfigError(_one_line_parse_error(str(e), prog)) from None
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
            r["name"] = f"{model.get('preset', 'bert')}+{obj.get('name', 'mlm')}"
    if cfg.only:
        wanted = [w.strip() for w in cfg.only.split(",") if w.strip()]
        names = [r["name"] for r in runs]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise UserError(f"--only names unknown run(s) {', '.join(unknown)}; choose from {', '.join(names)}")
        runs = [r for r in runs if r["name"] in wanted]
    return runs


def check_compare_config(cfg: CompareConfig):
    from .config import ConfigError

    runs = selected_runs(cfg)
    if len(runs) < 1:
        raise ConfigError("no runs to compare; give at least one entry in runs")
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names must be unique, got {names}; give each run a distinct name")
    for r in runs:
        unknown = set(r) - {"name", "model", "objective", "optim", "run"}
        if unknown:
            raise ConfigError(f"run {r['name']!r} has unknown key(s) {sorted(unknown)}; use name, model, objective, "
                              f"optim, run")
    if cfg.budget.max_tokens is None and cfg.budget.max_time is None:
        raise ConfigError("no budget: set budget.max_tokens or budget.max_time (applied equally to every run)")
    for key in ("max_steps", "max_tokens", "max_time", "output_dir"):
        if key in cfg.train:
            raise ConfigError(f"train.{key} is set by the comparison itself; use budget.max_tokens / "
                              f"budget.max_time and output_dir")


def run_dir_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_defaults(cfg: CompareConfig, run: dict, tokenizer_dir: Path, n_steps: int | None) -> dict:
    """The trainer's defaults dict for one run of the comparison."""
    train = dict(cfg.train)
    warmup = train.pop("warmup_steps", None)
    model = {"max_seq_len": max(train.get("seq_len", 128), 2), **run.get("model", {})}
    optim = dict(run.get("optim", {}))
    if warmup is not None:
        optim.setdefault("warmup_steps", warmup if n_steps is None else min(warmup, max(1, n_steps // 5)))
    out = Path(cfg.output_dir)
    run_section = {"output_dir": str(out / "runs" / run_dir_name(run["name"])), "name": run["name"],
                   "cache_dir": str(out / "cache"), "max_steps": None, "max_tokens": cfg.budget.max_tokens,
                   "max_time": cfg.budget.max_time, "progress": cfg.progress, "sample": False, **train,
                   **run.get("run", {})}
    if "eval_every" not in run_section:
        run_section["eval_every"] = max(1, (n_steps or 50 * cfg.n_evals) // cfg.n_evals)
    if "save_every" not in run_section:
        run_section["save_every"] = max(1, (n_steps or 200) // 4) if n_steps else 100
    return {"model": model, "objective": run.get("objective", {"name": "mlm"}),
            "data": dataclasses.asdict(cfg.data), "tokenizer": {"path": str(tokenizer_dir)}, "optim": optim,
            "run": run_section}


# ---- the shared tokenizer ----------------------------------------------------------------------------------------
def roles_of(runs: list[dict]) -> tuple:
    from objectives import OBJECTIVES

    from .tokenizer import ROLES

    roles = set()
    for r in runs:
        name = (r.get("objective") or {}).get("name", "mlm")
        if name not in OBJECTIVES:
            raise UserError(f"run {r['name']!r}: unknown objective {name!r}; choose one of "
                            f"{', '.join(sorted(OBJECTIVES))}")
        roles |= set(OBJECTIVES[name].special_tokens)
    return tuple(r for r in ROLES if r in roles)


def shared_tokenizer(cfg: CompareConfig, runs: list[dict], is_main: bool, timeout: float = 3600.0):
    """OUT/tokenizer: trained (or loaded) once by the main process with every run's special tokens."""
    from .tokenizer import build_tokenizer, load_tokenizer

    target = Path(cfg.output_dir) / "tokenizer"
    roles = roles_of(runs)
    if not (target / "tokenizer.json").is_file():
        if is_main:
            tmp = target.with_name("tokenizer.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"training the shared tokenizer ({cfg.tokenizer.kind}, {cfg.tokenizer.vocab_size} tokens, special "
                  f"roles {', '.join(roles)}) ...", flush=True)
            build_tokenizer(cfg.tokenizer, cfg.data, roles, out_dir=tmp, is_main_process=True, seed=cfg.data.seed)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
        else:  # other processes wait for the main process's atomic rename
            deadline = time.time() + timeout
            while not (target / "tokenizer.json").is_file():
                if time.time() > deadline:
                    raise UserError(f"timed out waiting for the main process to write {target}")
                time.sleep(1.0)
    tokenizer = load_tokenizer(str(target))
    missing = [r for r in roles if r != "sentinels" and getattr(tokenizer, r, None) is None]
    if "sentinels" in roles and "<extra_id_0>" not in tokenizer.get_vocab():
        missing.append("sentinels")
    if missing:
        raise UserError(f"the shared tokenizer {target} lacks {', '.join(missing)} needed by the selected runs; "
                        f"delete {target} (and {Path(cfg.output_dir) / 'runs'}) to train a new one")
    return target, tokenizer


# ---- matched size ------------------------------------------------------------------------------------------------
def model_configs(cfg: CompareConfig, runs: list[dict], tokenizer) -> dict:
    """{run name: ModelConfig} resolved exactly as the trainer will resolve them (vocabulary from the tokenizer)."""
    from .config import parse_config, resolve_model_config
    from .run import _token_ids

    out = {}
    for r in runs:
        defaults = run_defaults(cfg, r, Path("."), None)
        train_cfg = parse_config([], defaults, "pretrain compare")
        out[r["name"]] = resolve_model_config(train_cfg, len(tokenizer), _token_ids(tokenizer))
    return out


def check_matched(cfg: CompareConfig, model_cfgs: dict) -> dict:
    counts = {name: mc.num_params() for name, mc in model_cfgs.items()}
    if len(counts) > 1:
        low, high = min(counts.values()), max(counts.values())
        spread = (high - low) / low
        if spread > cfg.max_param_spread:
            shown = ", ".join(f"{n} {c:,}" for n, c in counts.items())
            raise UserError(f"model sizes differ by {100 * spread:.0f}% (> {100 * cfg.max_param_spread:.0f}%): "
                            f"{shown}; adjust the runs' model.n_layers / d_ff or raise max_param_spread")
    return counts


def expected_steps(cfg: CompareConfig, run: dict, tokenizer) -> int | None:
    """Optimizer steps the token budget gives this run (None for a time budget)."""
    import math

    from objectives import build_objective

    if cfg.budget.max_tokens is None:
        return None
    obj = run.get("objective", {})
    objective = build_objective(obj.get("name", "mlm"), tokenizer, **(obj.get("options") or {}))
    seq_len = {**cfg.train, **run.get("run", {})}.get("seq_len", 128)
    batch = {**cfg.train, **run.get("run", {})}.get("batch_size", 32)
    accum = {**cfg.train, **run.get("run", {})}.get("grad_accum", 1)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return max(1, math.ceil(cfg.budget.max_tokens / (objective.block_length(seq_len) * batch * accum * world)))


# ---- running -------------------------------------------------------------------------------------------------------
def run_state(run_dir: Path) -> str:
    """"finished" (final/ exists), "partial" (a complete checkpoint to resume from), "fresh"."""
    from .run_dir import checkpoints

    if (run_dir / "final" / "model.safetensors").is_file():
        return "finished"
    if checkpoints(run_dir):
        return "partial"
    return "fresh"


def check_same_budget(cfg: CompareConfig, name: str, run_dir: Path):
    """A finished run is only reused when it was trained with the budget asked for now."""
    from .run_dir import read_yaml

    saved = (read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}).get("run") or {}
    then = (saved.get("max_tokens"), saved.get("max_time"))
    now = (cfg.budget.max_tokens, cfg.budget.max_time)
    if then != now:
        raise UserError(f"run {name} in {run_dir} finished with budget max_tokens {then[0]}, max_time {then[1]} but "
                        f"the comparison now asks for max_tokens {now[0]}, max_time {now[1]}; use another output_dir "
                        f"(or delete {run_dir}) to train it again")


def _reset_accelerate():
    """Forget the previous run's Accelerator settings (the process group, if any, stays)."""
    try:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    except Exception:  # an older / newer accelerate without these hooks: the next Accelerator copes or says why
        pass


def train_runs(cfg: CompareConfig, runs: list[dict], tokenizer_dir: Path, tokenizer, is_main: bool) -> list[dict]:
    from .run import main as run_main

    done = []
    for i, r in enumerate(runs, 1):
        run_dir = Path(cfg.output_dir) / "runs" / run_dir_name(r["name"])
        state = run_state(run_dir)
        header = f"[run {i}/{len(runs)}] {r['name']}"
        if state == "finished":
            check_same_budget(cfg, r["name"], run_dir)
            if is_main:
                print(f"{header}: finished already ({run_dir / 'final'}), skipped", flush=True)
            done.append({"name": r["name"], "run_dir": str(run_dir), "skipped": True})
            continue
        if is_main:
            how = "resuming from its last checkpoint" if state == "partial" else "training"
            print(f"\n{header}: {how} -> {run_dir}", flush=True)
        argv = ["--resume"] if state == "partial" else ["--overwrite"]
        defaults = run_defaults(cfg, r, tokenizer_dir, expected_steps(cfg, r, tokenizer))
        _reset_accelerate()
        start = time.perf_counter()
        result = run_main(defaults, argv, prog=f"pretrain compare [{r['name']}]")
        if is_main:
            print(f"{header}: done in {time.perf_counter() - start:.0f}s", flush=True)
        done.append({"name": r["name"], "run_dir": str(run_dir), "skipped": False, **(result or {})})
    return done


def run_comparison(cfg: CompareConfig) -> dict | None:
    """Train every selected run (skipping finished ones), then write the report. Returns the results (main
    process) or None (other processes)."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    is_main = rank == 0
    out = Path(cfg.output_dir)
    runs = selected_runs(cfg)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir, tokenizer = shared_tokenizer(cfg, runs, is_main)
    model_cfgs = model_configs(cfg, runs, tokenizer)
    counts = check_matched(cfg, model_cfgs)
    if is_main:
        (out / "compare_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        budget = (f"{cfg.budget.max_tokens:,} corpus tokens" if cfg.budget.max_tokens else "") + \
            (" / " if cfg.budget.max_tokens and cfg.budget.max_time else "") + \
            (f"{cfg.budget.max_time:g} s" if cfg.budget.max_time else "")
        print(f"comparing {len(runs)} runs on one tokenizer ({len(tokenizer)} tokens), budget {budget} each:",
              flush=True)
        for name, c in counts.items():
            mc = model_cfgs[name]
            layers = f"{mc.n_layers}+{mc.decoder_layers}" if mc.arch == "encoder-decoder" else f"{mc.n_layers}"
            print(f"  {name:14s} {mc.arch:16s} d_model {mc.d_model}, layers {layers}, d_ff {mc.d_ff}: "
                  f"{c:,} parameters", flush=True)
    t0 = time.perf_counter()
    train_runs(cfg, runs, tokenizer_dir, tokenizer, is_main)
    if not is_main:
        return None
    print(f"\nall runs trained ({time.perf_counter() - t0:.0f}s this session); writing the report ...", flush=True)
    from .report import write_report

    results = write_report(cfg, runs, tokenizer)
    print(f"report: {out / 'report.md'}  {out / 'report.html'}  {out / 'results.json'}", flush=True)
    return results


def compare_main(argv=None, defaults: dict | None = None, prog: str = "pretrain compare") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_compare_config(argv, defaults, prog)
    try:
        run_comparison(cfg)
    except KeyboardInterrupt:
        print(f"error: interrupted; give the same command again to continue (finished runs are skipped, the "
              f"current one resumes from its last checkpoint in {cfg.output_dir}/runs)", file=sys.stderr)
        return 130
    return 0
