"""The comparison report: OUT/report.md, OUT/report.html (the same document, pictures embedded), OUT/results.json
and the PNGs under OUT/plots/ and OUT/attention/.

    write_report(cfg: CompareConfig, runs: [TrainedRun | (name, RunDir)], tokenizer) -> results dict

Per run: parameters, tokens seen, FLOPs, wall time, tokens/s, MFU, final validation loss and own accuracy (from
the run's metrics.jsonl / final/), the yardstick (pretrain/compare/yardstick.py, the same held-out positions for
all), a sample and an attention picture of one shared sentence. Plots: validation loss against tokens and against
wall time (one panel per run, each on its own scale), and the yardstick. The report says which numbers are comparable across objectives and which are not,
and states the budget (its kind; with a FLOPs budget, each run's FLOPs per step, steps and tokens).

Several pretraining seeds (cfg.seeds > 1): `runs` holds every (run, seed); results.json keeps each one's numbers
under "runs" and the mean / min / max over seeds per run under "aggregate"; the main table shows the mean and the
[min–max] range, the plots the mean with a min–max band. With one seed the report is the single-seed one.
The facts are gathered first (results.json holds them); the document is written once, in markdown.
"""
from __future__ import annotations

import json
import math
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from models import num_params  # noqa: E402
from objectives import objective_class  # noqa: E402

from .. import document  # noqa: E402
from ..atomic import write_text_atomic  # noqa: E402
from ..data.corpus import describe_corpus, quiet_datasets  # noqa: E402
from ..inspect.attention import attention_picture  # noqa: E402
from ..inspect.sample import sample  # noqa: E402
from ..train.run_dir import RunDir  # noqa: E402
from ..train.saved_run import load_run_model, load_run_spec, read_config  # noqa: E402
from .downstream import downstream_facts, downstream_markdown  # noqa: E402
from .pair_scores import pair_facts, pairs_markdown  # noqa: E402
from .yardstick import CAVEATS, DEFINITION, cloze, cloze_positions, held_out_windows  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]

COMPARABLE = """\
**Comparable across objectives** (same corpus, same tokenizer, matched parameter counts, the same budget):
- *Parameters* (exact counts of each model), *tokens seen* (corpus tokens consumed, counted the same way for every
  objective) and *FLOPs* (training FLOPs from one formula: 6 x matmul parameters per processed token + attention
  + the LM head per predicted token; an encoder-decoder processes every corpus token in the encoder *and* the
  decoder, and an objective that predicts only some positions spends less on the head - so equal tokens are not
  equal compute, and this column says by how much).
- *Wall time*, *tokens/s* and *MFU*, measured on the same machine with the same settings; but see the note on the
  machine above (other processes may have competed for the CPU), and MFU is relative to a matmul rate measured
  on this machine, not a datasheet peak.
- **The yardstick** (whole-word cloze): the same held-out text, the same hidden positions and tokens, the same
  tokenizer for every model; its accuracy and NLL are directly comparable (read its caveats).

**Not comparable across objectives:** *validation loss*, *own accuracy* and perplexity. Each is the objective's
own loss on its own targets, so a lower loss of one objective than another's means nothing; each curve only shows
that run's own progress. What each run's loss measures:"""

FLOPS_NOTE = ("FLOPs per step are computed before training with the trainer's formula (6 x matmul parameters per "
              "processed token in each stack + attention + the LM head per predicted position) over sample batches "
              "of each run's own training blocks; where the batch content decides the count (MLM predicts about 15% "
              "of the non-special tokens, infilling's input length varies) it is the expected value, so the logged "
              "total can miss the budget by a little more than one step.")

MACHINE_NOTE = ("wall time and throughput depend on what else ran on the machine at the same time; other processes "
                "may have competed for the CPU during these runs.")


# ---- gathering -------------------------------------------------------------------------------------------------
@dataclass
class TrainedRun:
    """One (run, seed) of the comparison, as the report is handed it."""
    name: str
    run_dir: RunDir
    seed_index: int = 0  # k of 0..seeds-1
    seed: int | None = None  # run.seed
    steps: int | None = None  # optimizer steps planned by the token / FLOPs budget
    flops_per_step: float | None = None  # expected training FLOPs per step (FLOPs budget)
    tokens_per_step: int | None = None


def _trained(runs) -> list[TrainedRun]:
    return [r if isinstance(r, TrainedRun) else TrainedRun(*r) for r in runs]


def run_label(r: dict, seeds: int) -> str:
    """A run's name, with its seed when the comparison has several."""
    return r["name"] if seeds <= 1 else f"{r['name']} (seed {r.get('seed')})"


def _median(rows, key):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return statistics.median(values) if values else None


def run_summary(name: str, run_dir: RunDir, tokenizer, windows, positions, cfg, looks: bool = True) -> dict:
    """Everything the report shows about one finished run (looks: its sample and attention picture too)."""
    model, model_cfg, tok, record = load_run_model(run_dir.path)
    objective = load_run_spec(record, tok, model_cfg).objective
    train_rows = [r for r in record.metrics if r.get("split", "train") == "train"]
    val_rows = [r for r in record.metrics if r.get("split") == "val"]
    layers = f"{model_cfg.n_layers}+{model_cfg.decoder_layers}" if model_cfg.arch == "encoder-decoder" \
        else str(model_cfg.n_layers)
    summary = {
        "name": name, "run_dir": str(run_dir), "preset": record.config.model.preset,
        "objective": objective.name, "objective_title": objective.title, "loss_meaning": objective.loss_meaning,
        "cloze_note": objective.cloze_note, "arch": model_cfg.arch, "d_model": model_cfg.d_model, "layers": layers,
        "n_heads": model_cfg.n_heads, "d_ff": model_cfg.d_ff, "vocab_size": model_cfg.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "non_embedding_parameters": num_params(model_cfg, non_embedding=True),
        "steps": record.step, "tokens": record.tokens, "flops": record.flops, "wall_time_s": record.elapsed,
        "tokens_per_s": _median(train_rows, "tokens_per_s"), "mfu": _median(train_rows, "mfu"),
        "val_loss": record.val.get("loss"), "val_accuracy": record.val.get("accuracy"),
        "val_curve": [{"step": r.get("step"), "tokens": r.get("tokens"), "elapsed": r.get("elapsed"),
                       "loss": r.get("loss"), "accuracy": r.get("accuracy")} for r in val_rows],
        "seq_len": record.config.run.seq_len, "batch_size": record.config.run.batch_size,
        "lr": record.config.optim.lr, "seed": record.config.run.seed,
        "document_masking": record.config.objective.document_masking,
    }
    if tok.get_vocab() != tokenizer.get_vocab():
        summary["warning"] = "this run's tokenizer differs from the comparison's shared tokenizer"
    summary["yardstick"] = cloze(model, objective, windows, positions)
    if not looks:
        return summary
    if cfg.samples:
        try:
            summary["sample"] = sample(model, tok, objective, windows[:1, :48], seed=0)
        except Exception as e:  # a sample is a courtesy
            summary["sample"] = f"(sample failed: {type(e).__name__}: {e})"
    out = Path(cfg.output_dir) / "attention" / f"{run_dir.path.name}.png"
    try:
        attention_picture(model, tok, cfg.attention_text, out, cfg.attention_layer,
                          title=f"{name} ({model_cfg.arch}), layer {cfg.attention_layer}")
        summary["attention_png"] = str(out)
    except Exception as e:
        summary["attention_error"] = f"{type(e).__name__}: {e}"
    return summary


def yardstick_window(cfg, runs: list[TrainedRun]) -> int:
    """The cloze window every model takes with its objective's framing tokens (an encoder-decoder adds some)."""
    window = cfg.yardstick.window
    for run_dir in (t.run_dir for t in _trained(runs)):
        if run_dir.finished():
            model_cfg = run_dir.read_model_config(run_dir.final)
            objective = objective_class(read_config(run_dir, run_dir.final).objective.name)
            window = min(window, model_cfg.max_seq_len - objective.cloze_overhead)
    return window


# ---- plots -----------------------------------------------------------------------------------------------------
def _style(ax, xlabel, ylabel, title):
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, frameon=True)


def by_run(results: list[dict]) -> dict[str, list[dict]]:
    """The entries of each run (one per seed), in the order of the runs."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["name"], []).append(r)
    return groups


def val_loss_figure(results: list[dict], x_key: str):
    """Small multiples: one panel per run, each on its own loss scale (the objectives' losses differ in kind and
    size: ELECTRA's generator + 50 x discriminator would flatten every other curve on a shared axis); with several
    seeds the mean over seeds (at each evaluation) and a min-max band."""
    groups = []
    for group in by_run(results).values():
        curves = [[c for c in r.get("val_curve", []) if isinstance(c.get("loss"), (int, float))
                   and isinstance(c.get(x_key), (int, float))] for r in group]
        curves = [c for c in curves if c]
        if curves:
            groups.append((group[0], curves))
    scale = 1e6 if x_key == "tokens" else 1.0
    n_cols = min(4, max(1, len(groups)))
    n_rows = max(1, math.ceil(len(groups) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols, 2.8 * n_rows + 0.6), squeeze=False)
    for i, (r, curves) in enumerate(groups):
        ax, color = axes[i // n_cols][i % n_cols], COLORS[i % len(COLORS)]
        n = min(len(c) for c in curves)  # the evaluations every seed reached (a time budget may differ)
        xs = [statistics.fmean(c[j][x_key] for c in curves) / scale for j in range(n)]
        losses = [[c[j]["loss"] for c in curves] for j in range(n)]
        if len(curves) > 1:
            ax.fill_between(xs, [min(v) for v in losses], [max(v) for v in losses], color=color, alpha=0.18,
                            linewidth=0)
        ax.plot(xs, [statistics.fmean(v) for v in losses], marker="o", markersize=3, linewidth=1.5, color=color)
        seeds = f", mean of {len(curves)} seeds" if len(curves) > 1 else ""
        ax.set_title(f"{r['name']} ({r['parameters'] / 1e6:.2f}M){seeds}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
    for j in range(len(groups), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].axis("off")
    xlabel = "corpus tokens seen (millions)" if x_key == "tokens" else "wall time (seconds, training + evaluation)"
    fig.supxlabel(xlabel, fontsize=10)
    fig.supylabel("validation loss (own objective)", fontsize=10)
    fig.suptitle("Validation loss, each objective's own loss on its own scale\n(read each panel's shape; levels "
                 "are not comparable across panels)" + (", band min-max over seeds" if any(len(c) > 1 for _, c in
                                                                                           groups) else ""),
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_val_loss(results: list[dict], x_key: str, path: Path) -> Path:
    """OUT/plots/val_loss_vs_*.png: the small multiples of val_loss_figure."""
    fig = val_loss_figure(results, x_key)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_yardstick(results: list[dict], path: Path) -> Path:
    """Cloze accuracy per run, error bars one standard error; with several seeds the mean over seeds, error bars
    the min-max range over seeds."""
    groups = [g for g in ([r for r in group if "yardstick" in r] for group in by_run(results).values()) if g]
    names = [g[0]["name"] for g in groups]
    seeded = any(len(g) > 1 for g in groups)
    variants = [("both", "native context (left-to-right models: left only)"),
                ("left", "left context only, for every model")]
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    width = 0.38
    tops = [1.0]
    for j, (variant, label) in enumerate(variants):
        if seeded:
            accs = [[100 * r["yardstick"][variant]["accuracy"] for r in g] for g in groups]
            vals = [statistics.fmean(a) for a in accs]
            errs = [[v - min(a) for v, a in zip(vals, accs)], [max(a) - v for v, a in zip(vals, accs)]]
            tops += [max(a) for a in accs]
        else:
            vals = [100 * g[0]["yardstick"][variant]["accuracy"] for g in groups]
            errs = [100 * g[0]["yardstick"][variant]["stderr"] for g in groups]
            tops += [v + e for v, e in zip(vals, errs)]
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        bars = ax.bar(xs, vals, width, yerr=errs, capsize=3, label=label, color=["#4c72b0", "#dd8452"][j])
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=8, xytext=(9, 2), textcoords="offset points")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=9)
    n = groups[0][0]["yardstick"]["both"]["n"] if names else 0
    bars_are = f"mean of the seeds, error bars: min-max over {max(len(g) for g in groups)} seeds" if seeded else \
        "error bars: one standard error"
    _style(ax, "run", "cloze top-1 accuracy (%)",
           f"Yardstick: whole-word cloze on held-out text ({n} hidden words, same for every model;\n{bars_are})")
    ax.set_ylim(0, max(tops) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- formatting ----------------------------------------------------------------------------------------------------
def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "M":
        return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"
    if kind == "flops":
        return f"{value:.2e}"
    if kind == "s":
        return f"{value:.0f} s"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "f3":
        return f"{value:.3f}"
    return str(value)


COLUMNS = [  # (header, key (dotted path into a run's summary) or function, format)
    ("run", "name", "str"), ("architecture", lambda r: f"{r['arch']} {r['layers']}L d{r['d_model']}", "str"),
    ("parameters", "parameters", "M"), ("non-emb. params", "non_embedding_parameters", "M"),
    ("tokens seen", "tokens", "int"), ("steps", "steps", "int"), ("train FLOPs", "flops", "flops"),
    ("wall time", "wall_time_s", "s"), ("tokens/s", "tokens_per_s", "int"), ("MFU", "mfu", "pct"),
    ("final val loss (own)", "val_loss", "f3"), ("own accuracy", "val_accuracy", "pct"),
    ("cloze acc. native", "yardstick.both.accuracy", "pct"),
    ("cloze acc. left-only", "yardstick.left.accuracy", "pct"),
    ("cloze top-5 native", "yardstick.both.top5", "pct"),
    ("cloze NLL native", "yardstick.both.nll", "f3"),
]
# the numbers results.json aggregates over seeds (mean, min, max), beyond the table's
AGGREGATED = [key for _, key, kind in COLUMNS if kind != "str"] + [
    "yardstick.left.top5", "yardstick.both.nll", "yardstick.left.nll"]
AGGREGATED = list(dict.fromkeys(AGGREGATED))


def column_value(r: dict, key):
    """A column's value in a run's summary (None where it has none)."""
    try:
        if callable(key):
            return key(r)
        value = r
        for part in key.split("."):
            value = value.get(part)
        return value
    except (AttributeError, KeyError, TypeError):
        return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def table_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = [c[0] for c in COLUMNS]
    rows = []
    for r in results:
        if r.get("missing"):
            rows.append([r["name"]] + ["(not finished)"] + [""] * (len(COLUMNS) - 2))
            continue
        rows.append([_fmt(column_value(r, key), kind) for _, key, kind in COLUMNS])
    return headers, rows


def aggregate(group: list[dict]) -> dict:
    """Mean, min and max over the finished seeds of one run, with every seed's value (aligned with "seeds")."""
    done = [r for r in group if not r.get("missing")]
    metrics = {}
    for key in AGGREGATED:
        values = [column_value(r, key) for r in done]
        finite = [v for v in values if _number(v)]
        if finite:
            metrics[key] = {"mean": statistics.fmean(finite), "min": min(finite), "max": max(finite),
                            "values": [v if _number(v) else None for v in values]}
    return {"name": group[0]["name"], "seeds": [r.get("seed") for r in done], "n_finished": len(done),
            "n_seeds": len(group), "metrics": metrics}


def seed_table_rows(results: list[dict], aggregates: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The main table over several seeds: per run the mean over its finished seeds, with the [min–max] range where
    they differ (a column that is the same for every seed, like the parameters, shows the value)."""
    headers = [c[0] for c in COLUMNS]
    rows = []
    for group, agg in zip(by_run(results).values(), aggregates):
        done = [r for r in group if not r.get("missing")]
        if not done:
            rows.append([group[0]["name"]] + ["(not finished)"] + [""] * (len(COLUMNS) - 2))
            continue
        cells = []
        for _, key, kind in COLUMNS:
            if kind == "str":
                cells.append(_fmt(column_value(done[0], key), kind))
                continue
            m = agg["metrics"].get(key)
            if m is None:
                cells.append("n/a")
            elif m["min"] == m["max"]:
                cells.append(_fmt(m["mean"], kind))
            else:
                cells.append(f"{_fmt(m['mean'], kind)} [{_fmt(m['min'], kind)}–{_fmt(m['max'], kind)}]")
        if len(done) < len(group):
            cells[0] += f" ({len(done)} of {len(group)} seeds)"
        rows.append(cells)
    return headers, rows


def budget_facts(cfg, runs: list[TrainedRun]) -> dict:
    """The budget's kind and size; with a FLOPs budget each run's expected FLOPs per step, steps and tokens."""
    b = cfg.budget
    kinds = [(kind, text) for kind, value, text in (
        ("tokens", b.max_tokens, lambda: f"{b.max_tokens:,} corpus tokens"),
        ("flops", getattr(b, "max_flops", None), lambda: f"{b.max_flops:.3g} training FLOPs"),
        ("time", b.max_time, lambda: f"{b.max_time:g} s of training")) if value]
    words = {"tokens": "equal corpus tokens", "flops": "equal training FLOPs", "time": "equal wall time"}
    first = "; a run stops at the first reached" if len(kinds) > 1 else ""
    text = (f"{' and '.join(words[k] for k, _ in kinds)}: {' and '.join(t() for _, t in kinds)} per run (the same "
            f"for every run{first})")
    per_run = []
    for t in runs:
        if t.flops_per_step is not None and t.seed_index == 0:
            per_run.append({"name": t.name, "flops_per_step": t.flops_per_step, "steps": t.steps,
                            "tokens": t.steps * t.tokens_per_step if t.tokens_per_step else None})
    return {"kind": [k for k, _ in kinds], "max_tokens": b.max_tokens, "max_flops": getattr(b, "max_flops", None),
            "max_time": b.max_time, "text": text, "per_run": per_run}


def report_facts(cfg, runs: list[TrainedRun], tokenizer, task=None) -> dict:
    """Score every finished (run, seed) on the yardstick, sample it and picture its attention (the first seed of
    each run); draw the plots; aggregate over seeds; return the facts (what results.json holds)."""
    runs = _trained(runs)
    seeds = getattr(cfg, "seeds", 1)
    out = Path(cfg.output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    y = cfg.yardstick
    window = yardstick_window(cfg, runs)
    with quiet_datasets():
        windows = held_out_windows(cfg.data, tokenizer, window, y.n_windows, y.seed)
    positions = cloze_positions(windows, tokenizer, y.min_context, y.min_right, y.seed)
    results = []
    for t in runs:
        label = t.name if seeds <= 1 else f"{t.name} (seed {t.seed})"
        if not t.run_dir.finished():
            results.append({"name": t.name, "run_dir": str(t.run_dir), "missing": True, "seed": t.seed,
                            "seed_index": t.seed_index})
            continue
        looks = t.seed_index == 0
        print(f"  report: {label} (yardstick{', sample, attention' if looks else ''}) ...", flush=True)
        summary = run_summary(t.name, t.run_dir, tokenizer, windows, positions, cfg, looks=looks)
        summary["seed_index"] = t.seed_index
        if t.flops_per_step is not None:
            summary["planned_flops_per_step"], summary["planned_steps"] = t.flops_per_step, t.steps
        results.append(summary)
    done = [r for r in results if not r.get("missing")]
    plots = {}
    if done:
        plots["val_loss_vs_tokens"] = plot_val_loss(done, "tokens", out / "plots" / "val_loss_vs_tokens.png")
        plots["val_loss_vs_time"] = plot_val_loss(done, "elapsed", out / "plots" / "val_loss_vs_time.png")
        plots["yardstick"] = plot_yardstick(done, out / "plots" / "yardstick.png")
    counts = [r["parameters"] for r in done]
    spread = (max(counts) - min(counts)) / min(counts) if counts else 0.0
    budget = budget_facts(cfg, runs)
    machine = (f"{platform.machine()} CPU x {torch.get_num_threads()} threads" if not torch.cuda.is_available()
               else torch.cuda.get_device_name(0))
    tokenizer_source = cfg.tokenizer.path or cfg.tokenizer.kind
    setup = {
        "corpus": describe_corpus(cfg.data),
        "tokenizer": f"{tokenizer_source}, {len(tokenizer)} tokens (shared by every run)",
        "budget": budget["text"],
        "matched_size": f"parameter counts within {100 * spread:.1f}% of each other (limit "
                        f"{100 * cfg.max_param_spread:.0f}%)",
        "training": ", ".join(f"{k} {v}" for k, v in cfg.train.items()), "machine": machine,
        "yardstick": f"{int((positions >= 0).sum())} hidden words in {len(windows)} held-out windows of {window} "
                     f"tokens",
    }
    setup["attention"] = attention_setup(results)
    if seeds > 1:
        bases = sorted({r["seed"] - r.get("seed_index", 0) for r in results if r.get("seed") is not None})
        which = (", ".join(str(bases[0] + k) for k in range(seeds)) if seeds <= 6 else
                 f"{bases[0]}..{bases[0] + seeds - 1}") if len(bases) == 1 else f"each run's own + 0..{seeds - 1}"
        setup["seeds"] = (f"{seeds} pretraining seeds per run (run.seed {which}: initialization, data order, masks "
                          f"and dropout); the table shows the mean over seeds and, where they differ, the "
                          f"[min–max] range")
    definition = DEFINITION.format(window=window, min_context=y.min_context, min_right=y.min_right)
    facts = {"setup": setup, "seeds": seeds, "budget": budget, "runs": results}
    if seeds > 1:
        facts["aggregate"] = [aggregate(group) for group in by_run(results).values()]
        headers, rows = seed_table_rows(results, facts["aggregate"])
    else:
        headers, rows = table_rows(results)
    facts["downstream"] = downstream_facts(cfg, task, runs, out)
    facts["pairs"] = pair_facts(cfg, runs) if hasattr(cfg, "pairs") else None
    return {**facts, "plots": {k: str(v) for k, v in plots.items()},
            "comparable": COMPARABLE, "yardstick_definition": definition, "yardstick_caveats": CAVEATS,
            "table": {"headers": headers, "rows": rows}}


def attention_setup(results: list[dict]) -> str:
    """Whether attention stayed inside each packed document (objective.document_masking), in every run or which."""
    masked = sorted({r["name"] for r in results if r.get("document_masking")})
    if not masked:
        return "across each packed block (objective.document_masking off in every run)"
    if len(masked) == len({r["name"] for r in results}):
        return "inside each packed document (objective.document_masking on in every run)"
    return (f"inside each packed document for {', '.join(masked)} only (objective.document_masking); across the "
            f"block for the rest")


# ---- the document ----------------------------------------------------------------------------------------------
def _yardstick_row(r: dict, seeds: int = 1) -> list[str]:
    y = r["yardstick"]
    return [run_label(r, seeds), y["method"], f"{100 * y['both']['accuracy']:.1f}% ± {100 * y['both']['stderr']:.1f}",
            f"{100 * y['left']['accuracy']:.1f}% ± {100 * y['left']['stderr']:.1f}", f"{100 * y['both']['top5']:.1f}%",
            f"{y['both']['nll']:.3f}", f"{y['left']['nll']:.3f}"]


def budget_paragraph(data: dict) -> str:
    """With a FLOPs budget: how it became each run's steps, and the tokens that bought."""
    per_run = data.get("budget", {}).get("per_run") or []
    if not per_run:
        return ""
    each = "; ".join(f"*{p['name']}* {p['flops_per_step']:.3g} expected FLOPs per step x {p['steps']:,} steps = "
                     f"{p['flops_per_step'] * p['steps']:.3g} FLOPs, {_fmt(p['tokens'], 'int')} tokens"
                     for p in per_run)
    also = [k for k in data["budget"]["kind"] if k != "flops"]
    first = f" (or stops earlier where the {' or '.join(also)} budget is reached first)" if also else ""
    return (f"**Equal training FLOPs.** Each run trains the optimizer steps its expected FLOPs per step fit in the "
            f"budget ({data['budget']['max_flops']:.3g} FLOPs, rounded down: no run spends more, none less than one "
            f"step below it){first}, so equal compute buys each objective a different number of tokens: {each}. "
            f"{FLOPS_NOTE}")


def zero_cloze_note(done: list[dict]) -> str:
    """Say plainly which runs got no hidden word right, rather than leave a bare 0.0% in the table."""
    zero = [group for group in by_run([r for r in done if "yardstick" in r]).values()
            if all(r["yardstick"]["both"]["accuracy"] == 0 for r in group)]
    if not zero:
        return ""
    lines = [f"*{g[0]['name']}* got none of the {g[0]['yardstick']['both']['n']} hidden words right (top-1, native "
             f"context{', every seed' if len(g) > 1 else ''}); its top-5 accuracy "
             f"({100 * g[0]['yardstick']['both']['top5']:.1f}%) and NLL ({g[0]['yardstick']['both']['nll']:.3f}) "
             f"still rank it, but at this budget its top-1 cloze says nothing: train longer (a larger "
             f"budget.max_tokens) before reading it." for g in zero]
    return "**Zero top-1 cloze accuracy.** " + " ".join(lines)


def report_markdown(data: dict, cfg) -> str:
    out = Path(cfg.output_dir)
    seeds = data.get("seeds", 1)
    done = [r for r in data["runs"] if not r.get("missing")]
    firsts = [group[0] for group in by_run(done).values()]  # one entry per run, for what every seed shares
    shown = [r for r in done if r.get("seed_index", 0) == 0]  # the runs sampled and pictured (first seeds)
    missing = [run_label(r, seeds) for r in data["runs"] if r.get("missing")]
    plots = data["plots"]
    seed_note = (f"Each cell: the mean over {seeds} seeds, and the [min–max] range where the seeds differ; a "
                 f"difference between two objectives within these ranges is within seed-to-seed noise. Every "
                 f"seed's own numbers: results.json (`runs`; `aggregate` has mean, min and max) and the yardstick "
                 f"table below.") if seeds > 1 else ""

    def picture(alt, path):
        return document.image(alt, str(Path(path).relative_to(out)))

    results = [
        "# Pretraining objectives compared",
        document.bullets([f"**{k.replace('_', ' ')}**: {v}" for k, v in data["setup"].items()] +
                         [f"**note**: {MACHINE_NOTE}"]),
        "## Results", document.table(data["table"]["headers"], data["table"]["rows"]), seed_note,
        budget_paragraph(data),
        "Sizes: " + "; ".join(f"{r['name']}: {r['arch']}, d_model {r['d_model']}, layers {r['layers']}, heads "
                              f"{r['n_heads']}, d_ff {r['d_ff']}, {r['parameters']:,} parameters" for r in firsts),
        "## What is comparable", data["comparable"],
        document.bullets([f"*{r['name']}* ({r['objective_title'] or r['objective']}): {r['loss_meaning']}"
                          for r in firsts]),
        "## Validation loss",
        "One panel per run, each on its own scale: the objectives' losses differ in kind and size (ELECTRA's is "
        "the generator's plus 50 x the discriminator's), so read each curve's shape, not its level.",
        *[picture(f"validation loss {caption}", plots[key]) for key, caption in
          (("val_loss_vs_tokens", "against tokens seen"), ("val_loss_vs_time", "against wall time")) if key in plots]]
    yardstick = [
        "## Yardstick: whole-word cloze", data["yardstick_definition"], "Caveats:", data["yardstick_caveats"],
        picture("yardstick", plots["yardstick"]) if "yardstick" in plots else "",
        document.table(["run", "method", "native acc.", "left-only acc.", "native top-5", "native NLL",
                        "left-only NLL"], [_yardstick_row(r, seeds) for r in done]),
        document.bullets([f"*{r['name']}*: {r['cloze_note']}" for r in firsts if r.get("cloze_note")]),
        zero_cloze_note(done)]
    looks = [
        "## Samples (greedy, from the same held-out text)",
        *[document.join(f"### {r['name']}", document.code(r.get("sample", "(samples off)"))) for r in shown],
        "## Attention",
        f"Layer {cfg.attention_layer} (all heads) on the sentence: \"{document.text(cfg.attention_text)}\". "
        f"Encoders attend both ways, decoders show the causal triangle, encoder-decoders show encoder "
        f"self-attention, decoder self-attention and the cross-attention of the decoder (reading the sentence "
        f"teacher-forced) over the encoder's tokens. `pretrain attention RUN --text \"...\"` draws the same "
        f"picture for any run.",
        *[document.join(f"### {r['name']}", picture(f"attention {r['name']}", r["attention_png"]))
          for r in shown if "attention_png" in r]]
    unfinished = ["## Not finished", f"Runs without a final model (rerun the comparison to finish them): "
                                     f"{', '.join(missing)}"] if missing else []
    downstream = downstream_markdown(data.get("downstream"), picture)
    return document.join(*results, pairs_markdown(data.get("pairs")), downstream, *yardstick, *looks, *unfinished)


def write_report(cfg, runs: list[TrainedRun], tokenizer, task=None) -> dict:
    out = Path(cfg.output_dir)
    data = report_facts(cfg, runs, tokenizer, task)
    write_text_atomic(out / "results.json", json.dumps(data, indent=2, default=str))
    text = report_markdown(data, cfg)
    write_text_atomic(out / "report.md", text)
    write_text_atomic(out / "report.html", document.to_html(text, "Pretraining objectives compared", out))
    return data
