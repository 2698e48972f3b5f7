"""Compare pretraining objectives on one corpus: one shared tokenizer, models of matched size, an equal budget,
one or several pretraining seeds.

    pretrain compare CONFIG.yaml [--budget.max_tokens N | --budget.max_flops F | --budget.max_time S] [--seeds N]
                     [--only bert+mlm,gpt2+clm] ...
    python recipes/compare_objectives.py [same options]          (the built-in objectives; accelerate launch works too)
    compare_main(argv, defaults=None) -> 0                        the Python entry point
    run_comparison(cfg: CompareConfig) -> dict                    results (also written to results.json)

Steps:
1. One tokenizer for every run (OUT/tokenizer): trained once with the union of the objectives' special tokens
   (mask token for MLM / infilling, BOS, 100 sentinels for span corruption), or loaded from tokenizer.path.
2. Every run's config and spec from the composition root (pretrain/train/build.py): sizes are checked to match
   (parameter counts within `max_param_spread`) and the budget gives each its steps, before anything trains. A
   token budget gives ceil(max_tokens / tokens per step); a FLOPs budget floor(max_flops / FLOPs per step), the
   FLOPs per step being the expected value over sample batches of the run's own training blocks
   (pretrain/train/budget.py: the trainer's formula), so every run spends at most the budget and less than one
   step below it; both given, the smaller number of steps.
3. Each (run, seed) in turn through the trainer, seed by seed (every run's seed 0 first), into OUT/runs/<name>
   (seed 0) and OUT/runs/<name>-seed<k> (seed k >= 1), with run.seed = base seed + k. A finished one is skipped
   (when trained with the same budget and seed), one with a checkpoint resumed, so an interrupted comparison
   continues where it stopped when the same command is given again. Under `accelerate launch` every process runs
   every run together (data parallel), one run after the other.
4. The report (main process, pretrain/compare/report.py), handed the trained runs.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models import num_params
from objectives import objective_class

from ..atomic import atomic_dir, write_text_atomic
from ..data.corpus import load_corpus, quiet_datasets
from ..data.order import generator, get_blocks
from ..data.tokenizer import ROLES, literal_tokens, load_tokenizer, tokenizer_for
from ..errors import Stopped, UserError
from ..train.budget import Budget, expected_step_flops
from ..train.build import RunSpec, corpus_blocks, run_spec
from ..train.config import ObjectiveSection, RunSection, load_config, parse_config
from ..train.main import is_main_by_environment, run_training
from ..train.run_dir import RunDir
from ..train.saved_run import read_config
from .config import CompareConfig, parse_compare_config, run_dir_name, selected_runs
from .downstream import check_task, evaluate_runs
from .report import TrainedRun, write_report

FLOPS_SAMPLE_SEED = "compare-flops"  # the sample batches a FLOPs budget is planned from: the same for every seed


@dataclass
class PlannedRun:
    run: dict  # the entry of `runs`
    run_dir: RunDir
    spec: RunSpec
    steps: int | None  # optimizer steps the token / FLOPs budget gives (None for a time budget alone)
    seed_index: int = 0  # k of 0..seeds-1
    seed: int = 0  # run.seed = base seed + k
    max_steps: int | None = None  # the trainer's run.max_steps: the steps a FLOPs budget allows (None without one)
    flops_per_step: float | None = None  # expected training FLOPs per optimizer step (FLOPs budget)
    tokens_per_step: int = 0

    @property
    def name(self) -> str:
        return self.run["name"]

    @property
    def label(self) -> str:
        """The run's name, with its seed when it is not the first."""
        return self.name if self.seed_index == 0 else f"{self.name} (seed {self.seed})"


def base_seed(cfg: CompareConfig, run: dict) -> int:
    """run.seed of a run's first seed: the run's own, else the shared train.seed, else the trainer's default."""
    return int({"seed": RunSection.seed, **cfg.train, **run.get("run", {})}["seed"])


def run_defaults(cfg: CompareConfig, run: dict, tokenizer_dir: Path, n_steps: int | None, seed_index: int = 0,
                 max_steps: int | None = None) -> dict:
    """The trainer's defaults dict for one run (seed `seed_index`) of the comparison; max_steps: what a FLOPs
    budget allows."""
    train = dict(cfg.train)
    warmup = train.pop("warmup_steps", None)
    model = {"max_seq_len": max(train.get("seq_len", 128), 2), **run.get("model", {})}
    optim = dict(run.get("optim", {}))
    if warmup is not None:
        optim.setdefault("warmup_steps", warmup if n_steps is None else min(warmup, max(1, n_steps // 5)))
    out = Path(cfg.output_dir)
    run_section = {"output_dir": str(out / "runs" / run_dir_name(run["name"], seed_index)),
                   "name": run["name"] if seed_index == 0 else f"{run['name']}-seed{seed_index}",
                   "cache_dir": str(out / "cache"), "max_steps": max_steps, "max_tokens": cfg.budget.max_tokens,
                   "max_time": cfg.budget.max_time, "progress": cfg.progress, "sample": False, **train,
                   **run.get("run", {})}
    if seed_index:
        run_section["seed"] = base_seed(cfg, run) + seed_index
    if "eval_every" not in run_section:
        run_section["eval_every"] = max(1, (n_steps or 50 * cfg.n_evals) // cfg.n_evals)
    if "save_every" not in run_section:
        run_section["save_every"] = max(1, (n_steps or 200) // 4) if n_steps else 100
    objective = dict(run.get("objective", {}))
    if cfg.document_masking is not None:
        objective["document_masking"] = cfg.document_masking
    return {"model": model, "objective": objective,
            "data": dataclasses.asdict(cfg.data), "tokenizer": {"path": str(tokenizer_dir)}, "optim": optim,
            "run": run_section}


# ---- the shared tokenizer ----------------------------------------------------------------------------------------
def roles_of(runs: list[dict]) -> tuple:
    roles = []
    for r in runs:
        try:
            name = (r.get("objective") or {}).get("name", ObjectiveSection.name)
            roles += objective_class(name).special_tokens
        except UserError as e:
            raise UserError(f"run {r['name']!r}: {e}") from None
    return tuple(r for r in ROLES if r in roles) + tuple(dict.fromkeys(literal_tokens(roles)))


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
    vocab, literals = tokenizer.get_vocab(), set(literal_tokens(roles))
    missing = [r for r in roles if r in literals and r not in vocab or r not in literals and r != "sentinels"
               and getattr(tokenizer, r, None) is None]
    if "sentinels" in roles and "<extra_id_0>" not in vocab:
        missing.append("sentinels")
    if missing:
        raise UserError(f"the shared tokenizer {target} lacks {', '.join(missing)} needed by the selected runs; "
                        f"delete {target} (and {Path(cfg.output_dir) / 'runs'}) to train a new one")
    return target, tokenizer


# ---- matched size and steps -------------------------------------------------------------------------------------
def flops_sample(train_cfg, spec: RunSpec, tokenizer, texts, max_blocks: int = 1024, max_micro: int = 32):
    """(micro-batches of blocks, generators) to estimate a run's FLOPs per step from: up to `max_micro` random
    micro-batches of its own training blocks (read from the cache the trainer then reuses), the same for every
    seed."""
    r = train_cfg.run
    train_blocks, _ = corpus_blocks(train_cfg, tokenizer, spec.block_length, texts)
    n_micro = max(2, min(max_micro, max_blocks // max(1, r.batch_size)))
    if hasattr(train_blocks, "__len__"):
        g = generator(FLOPS_SAMPLE_SEED, "blocks")
        micro = [get_blocks(train_blocks, torch.randint(len(train_blocks), (r.batch_size,), generator=g))
                 for _ in range(n_micro)]
    else:  # streamed: the first blocks of the stream
        rows = [row["input_ids"] for _, row in zip(range(n_micro * r.batch_size), train_blocks)]
        micro = [torch.as_tensor(rows[i: i + r.batch_size], dtype=torch.long)
                 for i in range(0, len(rows) - r.batch_size + 1, r.batch_size)]
    if not micro:
        raise UserError(f"run {train_cfg.run.name}: the corpus has fewer training blocks than one batch of "
                        f"{r.batch_size}; use a larger corpus or a smaller train.batch_size / seq_len")
    return micro, [generator(FLOPS_SAMPLE_SEED, "collate", i) for i in range(len(micro))]


def plan(cfg: CompareConfig, runs: list[dict], tokenizer_dir: Path, tokenizer) -> list[PlannedRun]:
    """Each (run, seed)'s spec (model config, objective, block length) and steps, from the composition root,
    seed-major (every run's first seed, then every run's second, ...). A FLOPs budget smaller than one step of some
    run is refused, naming it and the smallest budget that gives every run a step."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    b = cfg.budget
    texts = None
    if b.max_flops is not None:
        with quiet_datasets():
            texts = load_corpus(cfg.data)
    per_run, too_small = [], []
    for r in runs:
        # (a FLOPs budget alone: a placeholder step budget until its steps are known)
        placeholder = 1 if b.max_tokens is None and b.max_time is None else None
        train_cfg = parse_config([], run_defaults(cfg, r, tokenizer_dir, None, max_steps=placeholder),
                                 "pretrain compare")
        spec = run_spec(train_cfg, tokenizer)
        budget = Budget(train_cfg.run, train_cfg.optim.warmup_steps, spec.block_length, world)
        limits, max_steps, step_flops = [], None, None
        if b.max_tokens is not None:
            limits.append(budget.max_steps)
        if b.max_flops is not None:
            with quiet_datasets():
                micro, gens = flops_sample(train_cfg, spec, tokenizer, texts)
            step_flops = expected_step_flops(spec.model_cfg, spec.objective, micro, gens, train_cfg.run.grad_accum,
                                             world)
            max_steps = math.floor(b.max_flops / step_flops)
            if max_steps < 1:
                too_small.append((step_flops, r["name"]))
            limits.append(max_steps)
        per_run.append((r, spec, min(limits) if limits else None, max_steps, step_flops, budget.tokens_per_step))
    if too_small:
        step_flops, name = max(too_small)
        smallest = max(p[4] for p in per_run)
        raise UserError(f"budget.max_flops {b.max_flops:.3g} is less than one optimizer step of run {name} "
                        f"({step_flops:.3g} FLOPs per step); set budget.max_flops to at least {smallest:.3g} (one "
                        f"step of every run) or shrink the batch")
    planned = []
    for k in range(cfg.seeds):
        for r, spec, steps, max_steps, step_flops, tokens_per_step in per_run:
            run_dir = RunDir(Path(cfg.output_dir) / "runs" / run_dir_name(r["name"], k))
            planned.append(PlannedRun(r, run_dir, spec, steps, k, base_seed(cfg, r) + k, max_steps, step_flops,
                                      tokens_per_step))
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
def check_same_budget(cfg: CompareConfig, p: PlannedRun):
    """A finished run is only reused when it was trained with the budget (and the seed) asked for now. A FLOPs
    budget reaches the trainer as run.max_steps (the steps it allows this run), so that is what is compared."""
    saved = read_config(p.run_dir, p.run_dir.final)
    then = (saved.run.max_tokens, saved.run.max_time, saved.run.max_steps) if saved else (None, None, None)
    now = (cfg.budget.max_tokens, cfg.budget.max_time, p.run.get("run", {}).get("max_steps", p.max_steps))
    flops = f" (budget.max_flops {cfg.budget.max_flops:g})" if cfg.budget.max_flops is not None else \
        " (no FLOPs budget)"
    if then != now:
        raise UserError(f"run {p.label} in {p.run_dir} finished with budget max_tokens {then[0]}, max_time {then[1]}, "
                        f"max_steps {then[2]} but the comparison now asks for max_tokens {now[0]}, max_time "
                        f"{now[1]}, max_steps {now[2]}{flops}; use another output_dir (or delete {p.run_dir}) to "
                        f"train it again")
    if saved is not None and saved.run.seed != p.seed:
        raise UserError(f"run {p.label} in {p.run_dir} finished with run.seed {saved.run.seed} but the comparison "
                        f"now gives it seed {p.seed}; use another output_dir (or delete {p.run_dir}) to train it "
                        f"again")


def train_runs(cfg: CompareConfig, planned: list[PlannedRun], tokenizer_dir: Path, is_main: bool):
    """Train (or skip, or resume) every run."""
    for i, p in enumerate(planned, 1):
        header = f"[run {i}/{len(planned)}] {p.label}"
        if p.run_dir.finished():
            check_same_budget(cfg, p)
            if is_main:
                print(f"{header}: finished already ({p.run_dir.final}), skipped", flush=True)
            continue
        partial = bool(p.run_dir.complete_checkpoints())
        if is_main:
            print(f"\n{header}: {'resuming from its last checkpoint' if partial else 'training'} -> {p.run_dir}",
                  flush=True)
        start = time.perf_counter()
        train_cfg = load_config(["--resume"] if partial else ["--overwrite"],
                                run_defaults(cfg, p.run, tokenizer_dir, p.steps, p.seed_index, p.max_steps),
                                f"pretrain compare [{p.label}]")
        run_training(train_cfg)
        if is_main:
            print(f"{header}: done in {time.perf_counter() - start:.0f}s", flush=True)


def run_comparison(cfg: CompareConfig) -> dict | None:
    """Train every selected run (skipping finished ones), then write the report. Returns the results (main
    process) or None (other processes)."""
    is_main = is_main_by_environment()
    out = Path(cfg.output_dir)
    runs = selected_runs(cfg)
    task = check_task(cfg)  # a bad downstream task is refused before anything trains
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir, tokenizer = shared_tokenizer(cfg, runs, is_main)
    planned = plan(cfg, runs, tokenizer_dir, tokenizer)
    counts = check_matched(cfg, {p.name: p.spec.model_cfg for p in planned})
    if is_main:
        write_text_atomic(out / "compare_config.json", json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        seeds = f" x {cfg.seeds} seeds" if cfg.seeds > 1 else ""
        print(f"comparing {len(runs)} runs{seeds} on one tokenizer ({len(tokenizer)} tokens), budget "
              f"{_budget_text(cfg, ' / ', 's')} each:", flush=True)
        for p in planned:
            if p.seed_index:
                continue
            mc = p.spec.model_cfg
            layers = f"{mc.n_layers}+{mc.decoder_layers}" if mc.arch == "encoder-decoder" else f"{mc.n_layers}"
            flops = "" if p.flops_per_step is None else \
                f"; {p.flops_per_step:.3g} FLOPs per step -> {p.steps:,} steps, {p.steps * p.tokens_per_step:,} tokens"
            print(f"  {p.name:14s} {mc.arch:16s} d_model {mc.d_model}, layers {layers}, d_ff {mc.d_ff}: "
                  f"{counts[p.name]:,} parameters{flops}", flush=True)
    t0 = time.perf_counter()
    train_runs(cfg, planned, tokenizer_dir, is_main)
    if not is_main:
        return None
    print(f"\nall runs trained ({time.perf_counter() - t0:.0f}s this session)", flush=True)
    order = sorted(planned, key=lambda p: ([r["name"] for r in runs].index(p.name), p.seed_index))
    trained = [TrainedRun(p.name, p.run_dir, p.seed_index, p.seed, p.steps, p.flops_per_step, p.tokens_per_step)
               for p in order]
    t1 = time.perf_counter()
    evaluate_runs(cfg, task, trained, log=lambda m: print(m, flush=True))
    if task is not None:
        print(f"downstream evaluation done ({time.perf_counter() - t1:.0f}s this session)", flush=True)
    print("writing the report ...", flush=True)
    results = write_report(cfg, trained, tokenizer, task)
    print(f"report: {out / 'report.md'}  {out / 'report.html'}  {out / 'results.json'}", flush=True)
    return results


def _budget_text(cfg: CompareConfig, joiner: str, seconds: str) -> str:
    parts = ([f"{cfg.budget.max_tokens:,} corpus tokens"] if cfg.budget.max_tokens else []) + \
        ([f"{cfg.budget.max_flops:.3g} training FLOPs"] if cfg.budget.max_flops else []) + \
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
