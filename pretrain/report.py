"""The comparison report: OUT/report.md, OUT/report.html (self-contained: PNGs embedded as base64),
OUT/results.json and the PNGs under OUT/plots/ and OUT/attention/.

    write_report(cfg: CompareConfig, runs: list[dict], tokenizer) -> results dict

Per run: parameters, tokens seen, FLOPs, wall time, tokens/s, MFU, final validation loss and own accuracy (from
the run's metrics.jsonl / final/), the yardstick (pretrain.yardstick, the same held-out positions for all), a
sample and an attention picture of one shared sentence. Plots: validation loss against tokens and against wall
time, and the yardstick. The report says which numbers are comparable across objectives and which are not.
"""
from __future__ import annotations

import base64
import html
import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]

COMPARABLE = """\
**Comparable across objectives** (same corpus, same tokenizer, matched parameter counts, the same budget):
- *Parameters* (exact counts of each model), *tokens seen* (corpus tokens consumed, counted the same way for every
  objective) and *FLOPs* (training FLOPs from one formula: 6 x matmul parameters per processed token + attention
  + the LM head per predicted token; an encoder-decoder processes every corpus token in the encoder *and* the
  decoder, MLM projects only the 15% masked positions - so equal tokens are not equal compute, and this column
  says by how much).
- *Wall time*, *tokens/s* and *MFU*, measured on the same machine with the same settings; but see the note on the
  machine above (other processes may have competed for the CPU), and MFU is relative to a matmul rate measured
  on this machine, not a datasheet peak.
- **The yardstick** (whole-word cloze): the same held-out text, the same hidden positions and tokens, the same
  tokenizer for every model; its accuracy and NLL are directly comparable (read its caveats).

**Not comparable across objectives:**
- *Validation loss* and *own accuracy*: each is the objective's own training loss on its own targets - MLM predicts
  15% masked tokens from both sides, CLM every token from the left, BART reconstructs the whole text (most of it
  visible in its input, so its loss is low and its accuracy high by construction), T5 predicts only the dropped
  spans behind sentinels. A lower loss of one objective than another's means nothing; each curve only shows that
  run's own progress. Perplexity likewise.
"""


# ---- gathering -------------------------------------------------------------------------------------------------
def _median(rows, key):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return statistics.median(values) if values else None


def run_summary(run: dict, run_dir: Path, tokenizer, windows, positions, cfg) -> dict:
    """Everything the report shows about one finished run."""
    from objectives import build_objective

    from .attention_cli import attention_picture
    from .run_dir import load_run_model
    from .yardstick import cloze

    model, model_cfg, tok, info = load_run_model(run_dir)
    rows = info["metrics"]
    train_rows = [r for r in rows if r.get("split", "train") == "train"]
    val_rows = [r for r in rows if r.get("split") == "val"]
    objective = info["objective"]["name"]
    layers = f"{model_cfg.n_layers}+{model_cfg.decoder_layers}" if model_cfg.arch == "encoder-decoder" \
        else str(model_cfg.n_layers)
    summary = {
        "name": run["name"], "run_dir": str(run_dir), "preset": (info["config"].get("model") or {}).get("preset"),
        "objective": objective, "arch": model_cfg.arch, "d_model": model_cfg.d_model, "layers": layers,
        "n_heads": model_cfg.n_heads, "d_ff": model_cfg.d_ff, "vocab_size": model_cfg.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "non_embedding_parameters": model_cfg.num_params(non_embedding=True),
        "steps": info["step"], "tokens": info["tokens"], "flops": info["flops"], "wall_time_s": info["elapsed"],
        "tokens_per_s": _median(train_rows, "tokens_per_s"), "mfu": _median(train_rows, "mfu"),
        "val_loss": info["val"].get("loss"), "val_accuracy": info["val"].get("accuracy"),
        "val_curve": [{"step": r.get("step"), "tokens": r.get("tokens"), "elapsed": r.get("elapsed"),
                       "loss": r.get("loss"), "accuracy": r.get("accuracy")} for r in val_rows],
        "seq_len": info["seq_len"], "batch_size": info["batch_size"], "lr": (info["optim"] or {}).get("lr"),
    }
    if tok.get_vocab() != tokenizer.get_vocab():
        summary["warning"] = "this run's tokenizer differs from the comparison's shared tokenizer"
    summary["yardstick"] = cloze(model, tok, objective, windows, positions)
    if cfg.samples:
        try:
            from .sample import sample

            obj = build_objective(objective, tok, **(info["objective"]["options"] or {}))
            obj.check_arch(model_cfg.arch)
            summary["sample"] = sample(model, tok, obj, windows[:1, :48], seed=0)
        except Exception as e:  # a sample is a courtesy
            summary["sample"] = f"(sample failed: {type(e).__name__}: {e})"
    out = Path(cfg.output_dir) / "attention" / f"{run_dir.name}.png"
    try:
        attention_picture(model, tok, cfg.attention_text, out, cfg.attention_layer,
                          title=f"{run['name']} ({model_cfg.arch}), layer {cfg.attention_layer}")
        summary["attention_png"] = str(out)
    except Exception as e:
        summary["attention_error"] = f"{type(e).__name__}: {e}"
    return summary


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
    variants = [("both", "native context (GPT: left only)"), ("left", "left context only, for every model")]
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


def markdown_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _md_inline_to_html(text: str) -> str:
    """Tiny markdown subset for the fixed paragraphs: **bold**, *italic*, `code`, '- ' lists."""
    import re

    out, in_list = [], False
    for line in text.splitlines():
        esc = html.escape(line)
        esc = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc)
        esc = re.sub(r"\*(.+?)\*", r"<i>\1</i>", esc)
        esc = re.sub(r"`(.+?)`", r"<code>\1</code>", esc)
        if esc.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{esc[2:]}")
        elif esc.startswith("  ") and in_list:
            out.append(esc.strip())
        else:
            if in_list:
                out.append("</ul>")
                in_list = False
            out.append(f"<p>{esc}</p>" if esc.strip() else "")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def _b64(path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


# ---- the report ------------------------------------------------------------------------------------------------------
def write_report(cfg, runs: list[dict], tokenizer) -> dict:
    import platform

    import torch

    from .compare import run_dir_name
    from .corpus import describe
    from .yardstick import CAVEATS, DEFINITION, cloze_positions, held_out_windows

    out = Path(cfg.output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    y = cfg.yardstick
    window = y.window
    for r in runs:  # every model must take a window plus its framing tokens (BART: <s> </s>)
        config_file = out / "runs" / run_dir_name(r["name"]) / "final" / "model_config.json"
        if config_file.is_file():
            window = min(window, json.loads(config_file.read_text())["max_seq_len"] - 2)
    windows = held_out_windows(cfg.data, tokenizer, window, y.n_windows, y.seed)
    positions = cloze_positions(windows, tokenizer, y.min_context, y.min_right, y.seed)

    results = []
    for r in runs:
        run_dir = out / "runs" / run_dir_name(r["name"])
        if not (run_dir / "final" / "model.safetensors").is_file():
            results.append({"name": r["name"], "run_dir": str(run_dir), "missing": True})
            continue
        print(f"  report: {r['name']} (yardstick, sample, attention) ...", flush=True)
        results.append(run_summary(r, run_dir, tokenizer, windows, positions, cfg))
    done = [r for r in results if not r.get("missing")]

    plots = {}
    if done:
        plots["val_loss_vs_tokens"] = plot_val_loss(done, "tokens", out / "plots" / "val_loss_vs_tokens.png")
        plots["val_loss_vs_time"] = plot_val_loss(done, "elapsed", out / "plots" / "val_loss_vs_time.png")
        plots["yardstick"] = plot_yardstick(done, out / "plots" / "yardstick.png")

    counts = [r["parameters"] for r in done]
    spread = (max(counts) - min(counts)) / min(counts) if counts else 0.0
    budget = (f"{cfg.budget.max_tokens:,} corpus tokens" if cfg.budget.max_tokens else "") + \
        (" and " if cfg.budget.max_tokens and cfg.budget.max_time else "") + \
        (f"{cfg.budget.max_time:g} s of training" if cfg.budget.max_time else "")
    n_hidden = int((positions >= 0).sum())
    machine = (f"{platform.machine()} CPU x {torch.get_num_threads()} threads" if not torch.cuda.is_available()
               else torch.cuda.get_device_name(0))
    setup = {
        "corpus": describe(cfg.data), "tokenizer": f"{cfg.tokenizer.kind if not cfg.tokenizer.path else cfg.tokenizer.path}, "
        f"{len(tokenizer)} tokens (shared by every run)", "budget": f"{budget} per run (the same for every run)",
        "matched_size": f"parameter counts within {100 * spread:.1f}% of each other (limit "
                        f"{100 * cfg.max_param_spread:.0f}%)",
        "training": ", ".join(f"{k} {v}" for k, v in cfg.train.items()), "machine": machine,
        "yardstick": f"{n_hidden} hidden words in {len(windows)} held-out windows of {window} tokens",
    }
    definition = DEFINITION.format(window=window, min_context=y.min_context, min_right=y.min_right)
    headers, rows = table_rows(results)
    data = {"setup": setup, "runs": results, "plots": {k: str(v) for k, v in plots.items()},
            "comparable": COMPARABLE, "yardstick_definition": definition, "yardstick_caveats": CAVEATS,
            "table": {"headers": headers, "rows": rows}}
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str))

    # markdown
    md = ["# Pretraining objectives compared", ""]
    md += [f"- **{k.replace('_', ' ')}**: {v}" for k, v in setup.items()]
    md += ["- **note**: wall time and throughput depend on what else ran on the machine at the same time; "
           "other processes may have competed for the CPU during these runs.", "",
           "## Results", "", markdown_table(headers, rows), "",
           "Sizes: " + "; ".join(f"{r['name']}: {r['arch']}, d_model {r['d_model']}, layers {r['layers']}, "
                                 f"heads {r['n_heads']}, d_ff {r['d_ff']}, {r['parameters']:,} parameters"
                                 for r in done), "",
           "## What is comparable", "", COMPARABLE, "## Validation loss", ""]
    for key, caption in (("val_loss_vs_tokens", "against tokens seen"), ("val_loss_vs_time", "against wall time")):
        if key in plots:
            md += [f"![validation loss {caption}]({Path(plots[key]).relative_to(out)})", ""]
    md += ["## Yardstick: whole-word cloze", "", definition, "", "Caveats:", "", CAVEATS, ""]
    if "yardstick" in plots:
        md += [f"![yardstick]({Path(plots['yardstick']).relative_to(out)})", ""]
    md += ["| run | method | native acc. | left-only acc. | native top-5 | native NLL | left-only NLL |",
           "|---|---|---|---|---|---|---|"]
    for r in done:
        yd = r["yardstick"]
        md.append(f"| {r['name']} | {yd['method']} | {100 * yd['both']['accuracy']:.1f}% ± "
                  f"{100 * yd['both']['stderr']:.1f} | {100 * yd['left']['accuracy']:.1f}% ± "
                  f"{100 * yd['left']['stderr']:.1f} | {100 * yd['both']['top5']:.1f}% | {yd['both']['nll']:.3f} | "
                  f"{yd['left']['nll']:.3f} |")
    md += ["", "## Samples (greedy, from the same held-out text)", ""]
    for r in done:
        md += [f"### {r['name']}", "", "```", r.get("sample", "(samples off)"), "```", ""]
    md += ["## Attention", "", f"Layer {cfg.attention_layer} (all heads) on the sentence: "
           f"\"{cfg.attention_text}\". Encoders attend both ways, decoders show the causal triangle, encoder-decoders "
           f"show encoder self-attention, decoder self-attention and the cross-attention of the decoder (reading the "
           f"sentence teacher-forced) over the encoder's tokens. `pretrain attention RUN --text \"...\"` draws the "
           f"same picture for any run.", ""]
    for r in done:
        if "attention_png" in r:
            md += [f"### {r['name']}", "", f"![attention {r['name']}]({Path(r['attention_png']).relative_to(out)})", ""]
    missing = [r["name"] for r in results if r.get("missing")]
    if missing:
        md += ["## Not finished", "", f"Runs without a final model (rerun the comparison to finish them): "
               f"{', '.join(missing)}", ""]
    (out / "report.md").write_text("\n".join(md))

    # html (self-contained)
    h = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Pretraining objectives compared</title>",
         "<style>body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;line-height:1.4}"
         "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 7px;"
         "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
         "pre{background:#f7f7f7;padding:8px;white-space:pre-wrap;font-size:12px}img{max-width:100%}"
         ".row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.row figure{margin:0;flex:1 1 600px}"
         "figcaption{font-weight:bold}</style></head><body>",
         "<h1>Pretraining objectives compared</h1><ul>"]
    h += [f"<li><b>{html.escape(k.replace('_', ' '))}</b>: {html.escape(str(v))}</li>" for k, v in setup.items()]
    h += ["<li><b>note</b>: wall time and throughput depend on what else ran on the machine at the same time; other "
          "processes may have competed for the CPU during these runs.</li></ul>", "<h2>Results</h2><table><tr>"]
    h += [f"<th>{html.escape(x)}</th>" for x in headers] + ["</tr>"]
    for cells in rows:
        h.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    h += ["</table>", "<h2>What is comparable</h2>", _md_inline_to_html(COMPARABLE), "<h2>Validation loss</h2>",
          "<div class='row'>"]
    for key in ("val_loss_vs_tokens", "val_loss_vs_time"):
        if key in plots:
            h.append(f"<figure><img alt='{key}' src='data:image/png;base64,{_b64(plots[key])}'></figure>")
    h += ["</div>", "<h2>Yardstick: whole-word cloze</h2>", _md_inline_to_html(definition),
          "<p><b>Caveats</b></p>", _md_inline_to_html(CAVEATS)]
    if "yardstick" in plots:
        h.append(f"<img alt='yardstick' style='max-width:760px' src='data:image/png;base64,"
                 f"{_b64(plots['yardstick'])}'>")
    h.append("<table><tr><th>run</th><th>method</th><th>native acc.</th><th>left-only acc.</th><th>native top-5</th>"
             "<th>native NLL</th><th>left-only NLL</th></tr>")
    for r in done:
        yd = r["yardstick"]
        h.append(f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(yd['method'])}</td>"
                 f"<td>{100 * yd['both']['accuracy']:.1f}% ± {100 * yd['both']['stderr']:.1f}</td>"
                 f"<td>{100 * yd['left']['accuracy']:.1f}% ± {100 * yd['left']['stderr']:.1f}</td>"
                 f"<td>{100 * yd['both']['top5']:.1f}%</td><td>{yd['both']['nll']:.3f}</td>"
                 f"<td>{yd['left']['nll']:.3f}</td></tr>")
    h += ["</table>", "<h2>Samples (greedy, from the same held-out text)</h2>"]
    for r in done:
        h += [f"<h3>{html.escape(r['name'])}</h3><pre>{html.escape(r.get('sample', '(samples off)'))}</pre>"]
    h += ["<h2>Attention</h2>", f"<p>Layer {cfg.attention_layer} (all heads) on the sentence "
          f"<i>{html.escape(cfg.attention_text)}</i>. Encoders attend both ways, decoders show the causal triangle, "
          f"encoder-decoders show encoder self-attention, decoder self-attention and the decoder's cross-attention "
          f"over the encoder's tokens (the decoder reads the sentence teacher-forced).</p><div class='row'>"]
    for r in done:
        if "attention_png" in r:
            h.append(f"<figure><figcaption>{html.escape(r['name'])}</figcaption><img alt='attention "
                     f"{html.escape(r['name'])}' src='data:image/png;base64,{_b64(r['attention_png'])}'></figure>")
    h.append("</div>")
    if missing:
        h.append(f"<h2>Not finished</h2><p>{html.escape(', '.join(missing))}: rerun the comparison to finish them.</p>")
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h))
    return data
