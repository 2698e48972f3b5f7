"""Compare pretraining objectives on one corpus: one shared tokenizer, models of matched size, an equal budget.

    pretrain compare CONFIG.yaml [--budget.max_tokens N | --budget.max_time S] [--only bert+mlm,gpt2+clm] ...
    python recipes/compare_objectives.py [same options]          (the classic four; accelerate launch works too)
    compare_main(argv, defaults=None) -> 0                        the Python entry point
    run_comparison(cfg: CompareConfig) -> dict                    results (also written to results.json)

Steps:
1. One tokenizer for every run (OUT/tokenizer): trained once with the union of the objectives' special tokens
   (mask token for MLM / infilling, BOS, 100 sentinels for span corruption), or loaded from tokenizer.path.
2. Every run's config and spec from the composition root (pretrain/train/build.py): sizes are checked to match
   (parameter counts within `max_param_spread`) and the budget gives each its steps, before anything trains.
3. Each run in turn through the trainer, into OUT/runs/<name>. A finished run is skipped, one with a checkpoint
   resumed, so an interrupted comparison continues where it stopped when the same command is given again. Under
   `accelerate launch` every process runs every run together (data parallel), one run after the other.
4. The report (main process, pretrain/compare/report.py), handed the trained runs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from accelerate.state import AcceleratorState, GradientState

from models import num_params
from objectives import objective_class

from ..atomic import atomic_dir, write_text_atomic
from ..data.corpus import load_corpus, quiet_datasets
from ..data.tokenizer import ROLES, load_tokenizer, tokenizer_for
from ..errors import Stopped, UserError
from ..train.budget import Budget
from ..train.build import RunSpec, run_spec
from ..train.config import ObjectiveSection, load_config, parse_config
from ..train.main import is_main_by_environment, run_training
from ..train.run_dir import RunDir
from ..train.saved_run import read_config
from .config import CompareConfig, parse_compare_config, run_dir_name, selected_runs
from .report import write_report


@dataclass
class PlannedRun:
    run: dict  # the entry of `runs`
    run_dir: RunDir
    spec: RunSpec
    steps: int | None  # optimizer steps the token budget gives (None for a time budget)

    @property
    def name(self) -> str:
        return self.run["name"]


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
    return {"model": model, "objective": run.get("objective", {}),
            "data": dataclasses.asdict(cfg.data), "tokenizer": {"path": str(tokenizer_dir)}, "optim": optim,
            "run": run_section}


# ---- the shared tokenizer ----------------------------------------------------------------------------------------
def roles_of(runs: list[dict]) -> tuple:
    roles = set()
    for r in runs:
        try:
            name = (r.get("objective") or {}).get("name", ObjectiveSection.name)
            roles |= set(objective_class(name).special_tokens)
        except UserError as e:
            raise UserError(f"run {r['name']!r}: {e}") from None
    return tuple(r for r in ROLES if r in roles)


def shared_tokenizer(cfg: CompareConfig, runs: list[dict], is_main: bool, timeout: float = 3600.0):
    """OUT/tokenizer: trained (or loaded) once by the main process with every run's special tokens."""
    target = Path(cfg.output_dir) / "tokenizer"
    roles = roles_of(runs)
    if not (target / "tokenizer.json").is_file():
        if is_main:
            print(f"training the shared tokenizer ({cfg.tokenizer.kind}, {cfg.tokenizer.vocab_size} tokens, special "
                  f"roles {', '.join(roles)}) ...", flush=True)
            with quiet_datasets():
                texts = None if cfg.tokenizer.path else load_corpus(cfg.data)[0]
            tokenizer = tokenizer_for(cfg.tokenizer, texts, roles, seed=cfg.data.seed)
            with atomic_dir(target) as tmp:
                tokenizer.save_pretrained(str(tmp))
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


# ---- matched size and steps -------------------------------------------------------------------------------------
def plan(cfg: CompareConfig, runs: list[dict], tokenizer_dir: Path, tokenizer) -> list[PlannedRun]:
    """Each run's spec (model config, objective, block length) and steps, from the composition root."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    planned = []
    for r in runs:
        train_cfg = parse_config([], run_defaults(cfg, r, tokenizer_dir, None), "pretrain compare")
        spec = run_spec(train_cfg, tokenizer)
        budget = Budget(train_cfg.run, train_cfg.optim.warmup_steps, spec.block_length, world)
        steps = budget.max_steps if cfg.budget.max_tokens is not None else None
        planned.append(PlannedRun(r, RunDir(train_cfg.run.output_dir), spec, steps))
    return planned


def check_matched(cfg: CompareConfig, model_cfgs: dict) -> dict:
    counts = {name: num_params(mc) for name, mc in model_cfgs.items()}
    if len(counts) > 1:
        low, high = min(counts.values()), max(counts.values())
        spread = (high - low) / low
        if spread > cfg.max_param_spread:
            shown = ", ".join(f"{n} {c:,}" for n, c in counts.items())
            raise UserError(f"model sizes differ by {100 * spread:.0f}% (> {100 * cfg.max_param_spread:.0f}%): "
                            f"{shown}; adjust the runs' model.n_layers / d_ff or raise max_param_spread")
    return counts


# ---- running -------------------------------------------------------------------------------------------------------
def check_same_budget(cfg: CompareConfig, name: str, run_dir: RunDir):
    """A finished run is only reused when it was trained with the budget asked for now."""
    saved = read_config(run_dir, run_dir.final)
    then = (saved.run.max_tokens, saved.run.max_time) if saved else (None, None)
    now = (cfg.budget.max_tokens, cfg.budget.max_time)
    if then != now:
        raise UserError(f"run {name} in {run_dir} finished with budget max_tokens {then[0]}, max_time {then[1]} but "
                        f"the comparison now asks for max_tokens {now[0]}, max_time {now[1]}; use another output_dir "
                        f"(or delete {run_dir}) to train it again")


def _reset_accelerate():
    """Forget the previous run's Accelerator settings (the process group, if any, stays)."""
    try:
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    except AttributeError:  # an accelerate without these hooks: the next Accelerator copes or says why
        pass


def train_runs(cfg: CompareConfig, planned: list[PlannedRun], tokenizer_dir: Path, is_main: bool):
    """Train (or skip, or resume) every run."""
    for i, p in enumerate(planned, 1):
        header = f"[run {i}/{len(planned)}] {p.name}"
        if p.run_dir.finished():
            check_same_budget(cfg, p.name, p.run_dir)
            if is_main:
                print(f"{header}: finished already ({p.run_dir.final}), skipped", flush=True)
            continue
        partial = bool(p.run_dir.complete_checkpoints())
        if is_main:
            print(f"\n{header}: {'resuming from its last checkpoint' if partial else 'training'} -> {p.run_dir}",
                  flush=True)
        _reset_accelerate()
        start = time.perf_counter()
        train_cfg = load_config(["--resume"] if partial else ["--overwrite"],
                                run_defaults(cfg, p.run, tokenizer_dir, p.steps), f"pretrain compare [{p.name}]")
        run_training(train_cfg)
        if is_main:
            print(f"{header}: done in {time.perf_counter() - start:.0f}s", flush=True)


def run_comparison(cfg: CompareConfig) -> dict | None:
    """Train every selected run (skipping finished ones), then write the report. Returns the results (main
    process) or None (other processes)."""
    is_main = is_main_by_environment()
    out = Path(cfg.output_dir)
    runs = selected_runs(cfg)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir, tokenizer = shared_tokenizer(cfg, runs, is_main)
    planned = plan(cfg, runs, tokenizer_dir, tokenizer)
    counts = check_matched(cfg, {p.name: p.spec.model_cfg for p in planned})
    if is_main:
        write_text_atomic(out / "compare_config.json", json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        print(f"comparing {len(runs)} runs on one tokenizer ({len(tokenizer)} tokens), budget "
              f"{_budget_text(cfg, ' / ', 's')} each:", flush=True)
        for p in planned:
            mc = p.spec.model_cfg
            layers = f"{mc.n_layers}+{mc.decoder_layers}" if mc.arch == "encoder-decoder" else f"{mc.n_layers}"
            print(f"  {p.name:14s} {mc.arch:16s} d_model {mc.d_model}, layers {layers}, d_ff {mc.d_ff}: "
                  f"{counts[p.name]:,} parameters", flush=True)
    t0 = time.perf_counter()
    train_runs(cfg, planned, tokenizer_dir, is_main)
    if not is_main:
        return None
    print(f"\nall runs trained ({time.perf_counter() - t0:.0f}s this session); writing the report ...", flush=True)
    results = write_report(cfg, [(p.name, p.run_dir) for p in planned], tokenizer)
    print(f"report: {out / 'report.md'}  {out / 'report.html'}  {out / 'results.json'}", flush=True)
    return results


def _budget_text(cfg: CompareConfig, joiner: str, seconds: str) -> str:
    parts = ([f"{cfg.budget.max_tokens:,} corpus tokens"] if cfg.budget.max_tokens else []) + \
        ([f"{cfg.budget.max_time:g} {seconds}"] if cfg.budget.max_time else [])
    return joiner.join(parts)


def compare_main(argv=None, defaults: dict | None = None, prog: str = "pretrain compare") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_compare_config(argv, defaults, prog)
    try:
        run_comparison(cfg)
    except Stopped as e:  # SIGTERM / first Ctrl-C: the current run's checkpoint is written
        if is_main_by_environment():
            print(f"stopped {e}; give the same command again to continue (finished runs are skipped, this one "
                  f"resumes)", file=sys.stderr, flush=True)
        return Stopped.EXIT_STATUS
    except KeyboardInterrupt:
        print(f"error: interrupted; give the same command again to continue (finished runs are skipped, the "
              f"current one resumes from its last checkpoint in {cfg.output_dir}/runs)", file=sys.stderr)
        return 130
    return 0
