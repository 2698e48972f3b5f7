"""The comparison report: OUT/report.md, OUT/report.html (the same document, pictures embedded), OUT/results.json
and the PNGs under OUT/plots/ and OUT/attention/.

    write_report(cfg: CompareConfig, runs: [(name, RunDir)], tokenizer) -> results dict

Per run: parameters, tokens seen, FLOPs, wall time, tokens/s, MFU, final validation loss and own accuracy (from
the run's metrics.jsonl / final/), the yardstick (pretrain/compare/yardstick.py, the same held-out positions for
all), a sample and an attention picture of one shared sentence. Plots: validation loss against tokens and against
wall time, and the yardstick. The report says which numbers are comparable across objectives and which are not.
The facts are gathered first (results.json holds them); the document is written once, in markdown.
"""
from __future__ import annotations

import json
import math
import platform
import statistics
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

MACHINE_NOTE = ("wall time and throughput depend on what else ran on the machine at the same time; other processes "
                "may have competed for the CPU during these runs.")


# ---- gathering -------------------------------------------------------------------------------------------------
def _median(rows, key):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return statistics.median(values) if values else None


def run_summary(name: str, run_dir: RunDir, tokenizer, windows, positions, cfg) -> dict:
    """Everything the report shows about one finished run."""
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
        "lr": record.config.optim.lr,
    }
    if tok.get_vocab() != tokenizer.get_vocab():
        summary["warning"] = "this run's tokenizer differs from the comparison's shared tokenizer"
    summary["yardstick"] = cloze(model, objective, windows, positions)
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


def yardstick_window(cfg, runs: list[tuple[str, RunDir]]) -> int:
    """The cloze window every model takes with its objective's framing tokens (an encoder-decoder adds some)."""
    window = cfg.yardstick.window
    for _, run_dir in runs:
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


def plot_val_loss(results: list[dict], x_key: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for i, r in enumerate(results):
        curve = [c for c in r.get("val_curve", []) if isinstance(c.get("loss"), (int, float))]
        if not curve:
            continue
        scale = 1e6 if x_key == "tokens" else 1.0
        xs = [c[x_key] / scale for c in curve]
        ax.plot(xs, [c["loss"] for c in curve], marker="o", markersize=3.5, linewidth=1.6,
                color=COLORS[i % len(COLORS)], label=f"{r['name']} ({r['parameters'] / 1e6:.2f}M params)")
    xlabel = "corpus tokens seen (millions)" if x_key == "tokens" else "wall time (seconds, training + evaluation)"
    _style(ax, xlabel, "validation loss (nats per predicted token)",
           "Validation loss, each objective's own loss\n(the shapes are comparable, the levels are not)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_yardstick(results: list[dict], path: Path) -> Path:
    names = [r["name"] for r in results if "yardstick" in r]
    variants = [("both", "native context (left-to-right models: left only)"),
                ("left", "left context only, for every model")]
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    width = 0.38
    for j, (variant, label) in enumerate(variants):
        vals = [100 * r["yardstick"][variant]["accuracy"] for r in results if "yardstick" in r]
        errs = [100 * r["yardstick"][variant]["stderr"] for r in results if "yardstick" in r]
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        bars = ax.bar(xs, vals, width, yerr=errs, capsize=3, label=label, color=["#4c72b0", "#dd8452"][j])
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=8, xytext=(9, 2), textcoords="offset points")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=9)
    n = results[0]["yardstick"]["both"]["n"] if names else 0
    _style(ax, "run", "cloze top-1 accuracy (%)",
           f"Yardstick: whole-word cloze on held-out text ({n} hidden words, same for every model;\n"
           f"error bars: one standard error)")
    ax.set_ylim(0, max([1.0] + [100 * (r["yardstick"][v]["accuracy"] + r["yardstick"][v]["stderr"])
                                for r in results if "yardstick" in r for v in ("both", "left")]) * 1.2)
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


COLUMNS = [  # (header, key or function, format)
    ("run", "name", "str"), ("architecture", lambda r: f"{r['arch']} {r['layers']}L d{r['d_model']}", "str"),
    ("parameters", "parameters", "M"), ("non-emb. params", "non_embedding_parameters", "M"),
    ("tokens seen", "tokens", "int"), ("steps", "steps", "int"), ("train FLOPs", "flops", "flops"),
    ("wall time", "wall_time_s", "s"), ("tokens/s", "tokens_per_s", "int"), ("MFU", "mfu", "pct"),
    ("final val loss (own)", "val_loss", "f3"), ("own accuracy", "val_accuracy", "pct"),
    ("cloze acc. native", lambda r: r["yardstick"]["both"]["accuracy"], "pct"),
    ("cloze acc. left-only", lambda r: r["yardstick"]["left"]["accuracy"], "pct"),
    ("cloze top-5 native", lambda r: r["yardstick"]["both"]["top5"], "pct"),
    ("cloze NLL native", lambda r: r["yardstick"]["both"]["nll"], "f3"),
]


def table_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = [c[0] for c in COLUMNS]
    rows = []
    for r in results:
        if r.get("missing"):
            rows.append([r["name"]] + ["(not finished)"] + [""] * (len(COLUMNS) - 2))
            continue
        cells = []
        for _, key, kind in COLUMNS:
            try:
                value = key(r) if callable(key) else r.get(key)
            except (KeyError, TypeError):
                value = None
            cells.append(_fmt(value, kind))
        rows.append(cells)
    return headers, rows


def report_facts(cfg, runs: list[tuple[str, RunDir]], tokenizer) -> dict:
    """Score every finished run on the yardstick, sample it, picture its attention; draw the plots; return the
    facts (what results.json holds)."""
    out = Path(cfg.output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    y = cfg.yardstick
    window = yardstick_window(cfg, runs)
    with quiet_datasets():
        windows = held_out_windows(cfg.data, tokenizer, window, y.n_windows, y.seed)
    positions = cloze_positions(windows, tokenizer, y.min_context, y.min_right, y.seed)
    results = []
    for name, run_dir in runs:
        if not run_dir.finished():
            results.append({"name": name, "run_dir": str(run_dir), "missing": True})
            continue
        print(f"  report: {name} (yardstick, sample, attention) ...", flush=True)
        results.append(run_summary(name, run_dir, tokenizer, windows, positions, cfg))
    done = [r for r in results if not r.get("missing")]
    plots = {}
    if done:
        plots["val_loss_vs_tokens"] = plot_val_loss(done, "tokens", out / "plots" / "val_loss_vs_tokens.png")
        plots["val_loss_vs_time"] = plot_val_loss(done, "elapsed", out / "plots" / "val_loss_vs_time.png")
        plots["yardstick"] = plot_yardstick(done, out / "plots" / "yardstick.png")
    counts = [r["parameters"] for r in done]
    spread = (max(counts) - min(counts)) / min(counts) if counts else 0.0
    budget = " and ".join(([f"{cfg.budget.max_tokens:,} corpus tokens"] if cfg.budget.max_tokens else []) +
                          ([f"{cfg.budget.max_time:g} s of training"] if cfg.budget.max_time else []))
    machine = (f"{platform.machine()} CPU x {torch.get_num_threads()} threads" if not torch.cuda.is_available()
               else torch.cuda.get_device_name(0))
    tokenizer_source = cfg.tokenizer.path or cfg.tokenizer.kind
    setup = {
        "corpus": describe_corpus(cfg.data),
        "tokenizer": f"{tokenizer_source}, {len(tokenizer)} tokens (shared by every run)",
        "budget": f"{budget} per run (the same for every run)",
        "matched_size": f"parameter counts within {100 * spread:.1f}% of each other (limit "
                        f"{100 * cfg.max_param_spread:.0f}%)",
        "training": ", ".join(f"{k} {v}" for k, v in cfg.train.items()), "machine": machine,
        "yardstick": f"{int((positions >= 0).sum())} hidden words in {len(windows)} held-out windows of {window} "
                     f"tokens",
    }
    definition = DEFINITION.format(window=window, min_context=y.min_context, min_right=y.min_right)
    headers, rows = table_rows(results)
    return {"setup": setup, "runs": results, "plots": {k: str(v) for k, v in plots.items()},
            "comparable": COMPARABLE, "yardstick_definition": definition, "yardstick_caveats": CAVEATS,
            "table": {"headers": headers, "rows": rows}}


# ---- the document ----------------------------------------------------------------------------------------------
def _yardstick_row(r: dict) -> list[str]:
    y = r["yardstick"]
    return [r["name"], y["method"], f"{100 * y['both']['accuracy']:.1f}% ± {100 * y['both']['stderr']:.1f}",
            f"{100 * y['left']['accuracy']:.1f}% ± {100 * y['left']['stderr']:.1f}", f"{100 * y['both']['top5']:.1f}%",
            f"{y['both']['nll']:.3f}", f"{y['left']['nll']:.3f}"]


def report_markdown(data: dict, cfg) -> str:
    out = Path(cfg.output_dir)
    done = [r for r in data["runs"] if not r.get("missing")]
    missing = [r["name"] for r in data["runs"] if r.get("missing")]
    plots = data["plots"]

    def picture(alt, path):
        return document.image(alt, str(Path(path).relative_to(out)))

    results = [
        "# Pretraining objectives compared",
        document.bullets([f"**{k.replace('_', ' ')}**: {v}" for k, v in data["setup"].items()] +
                         [f"**note**: {MACHINE_NOTE}"]),
        "## Results", document.table(data["table"]["headers"], data["table"]["rows"]),
        "Sizes: " + "; ".join(f"{r['name']}: {r['arch']}, d_model {r['d_model']}, layers {r['layers']}, heads "
                              f"{r['n_heads']}, d_ff {r['d_ff']}, {r['parameters']:,} parameters" for r in done),
        "## What is comparable", data["comparable"],
        document.bullets([f"*{r['name']}* ({r['objective_title'] or r['objective']}): {r['loss_meaning']}"
                          for r in done]),
        "## Validation loss",
        *[picture(f"validation loss {caption}", plots[key]) for key, caption in
          (("val_loss_vs_tokens", "against tokens seen"), ("val_loss_vs_time", "against wall time")) if key in plots]]
    yardstick = [
        "## Yardstick: whole-word cloze", data["yardstick_definition"], "Caveats:", data["yardstick_caveats"],
        picture("yardstick", plots["yardstick"]) if "yardstick" in plots else "",
        document.table(["run", "method", "native acc.", "left-only acc.", "native top-5", "native NLL",
                        "left-only NLL"], [_yardstick_row(r) for r in done]),
        document.bullets([f"*{r['name']}*: {r['cloze_note']}" for r in done if r.get("cloze_note")])]
    looks = [
        "## Samples (greedy, from the same held-out text)",
        *[document.join(f"### {r['name']}", document.code(r.get("sample", "(samples off)"))) for r in done],
        "## Attention",
        f"Layer {cfg.attention_layer} (all heads) on the sentence: \"{document.text(cfg.attention_text)}\". "
        f"Encoders attend both ways, decoders show the causal triangle, encoder-decoders show encoder "
        f"self-attention, decoder self-attention and the cross-attention of the decoder (reading the sentence "
        f"teacher-forced) over the encoder's tokens. `pretrain attention RUN --text \"...\"` draws the same "
        f"picture for any run.",
        *[document.join(f"### {r['name']}", picture(f"attention {r['name']}", r["attention_png"]))
          for r in done if "attention_png" in r]]
    unfinished = ["## Not finished", f"Runs without a final model (rerun the comparison to finish them): "
                                     f"{', '.join(missing)}"] if missing else []
    return document.join(*results, *yardstick, *looks, *unfinished)


def write_report(cfg, runs: list[tuple[str, RunDir]], tokenizer) -> dict:
    out = Path(cfg.output_dir)
    data = report_facts(cfg, runs, tokenizer)
    write_text_atomic(out / "results.json", json.dumps(data, indent=2, default=str))
    text = report_markdown(data, cfg)
    write_text_atomic(out / "report.md", text)
    write_text_atomic(out / "report.html", document.to_html(text, "Pretraining objectives compared", out))
    return data
