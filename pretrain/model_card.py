"""The README.md of an exported model: Hub metadata (YAML front matter) and what a reader needs to know about the
model: architecture, objective and its settings, corpus, tokens seen, compute, final validation metrics, the loss
curve (loss_curve.png beside it) and how to use it."""
from __future__ import annotations

import json
from pathlib import Path

PIPELINE_TAGS = {"encoder": "fill-mask", "decoder": "text-generation", "encoder-decoder": "text2text-generation"}
AUTO_CLASSES = {"encoder": "AutoModelForMaskedLM", "decoder": "AutoModelForCausalLM",
                "encoder-decoder": "AutoModelForSeq2SeqLM"}
OBJECTIVE_NAMES = {"mlm": "masked language modeling (BERT)", "clm": "causal language modeling (GPT)",
                   "span": "span corruption (T5)", "infill": "text infilling (BART)"}
OBJECTIVE_TAGS = {"mlm": "masked-lm", "clm": "causal-lm", "span": "span-corruption", "infill": "text-infilling"}
LOSS_PLOT = "loss_curve.png"


def hub_datasets(data: dict) -> list[str]:
    """Hub dataset ids named by the data config (local files and the built-in corpus are not Hub datasets)."""
    found = []
    for key in ("hub_dataset", "dataset", "hf_dataset", "name", "path", "source"):
        value = data.get(key)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(v, str) or not v or v in ("builtin", "built-in", "pydoc") or v.startswith((".", "/")):
                continue
            if any(c in v for c in "*?[") or Path(v).suffix in (".txt", ".jsonl", ".json", ".parquet", ".csv") \
                    or Path(v).exists():
                continue
            if key in ("hub_dataset", "dataset", "hf_dataset") or ("/" in v and v.count("/") == 1):
                found.append(v)
    return list(dict.fromkeys(found))


def describe_corpus(data: dict) -> str:
    """One line naming where the text came from (DataConfig: files, hub_dataset, ...)."""
    if not data:
        return "not recorded"
    files = [f for f in (data.get("files") or []) if f != "builtin"]
    parts = []
    if files:
        shown = ", ".join(f"`{Path(str(f)).name}`" for f in files[:5])
        parts.append(f"local files {shown}" + (f" and {len(files) - 5} more" if len(files) > 5 else ""))
    if data.get("hub_dataset"):
        extra = "/".join(str(data[k]) for k in ("hub_config", "hub_split") if data.get(k))
        parts.append(f"Hub dataset `{data['hub_dataset']}`" + (f" ({extra})" if extra else ""))
    if not parts and ("files" in data or "hub_dataset" in data):
        parts.append("the built-in offline corpus (the CPython documentation and standard-library docstrings)")
    if not parts:
        parts.append(", ".join(f"{k}: `{v}`" for k, v in data.items() if v not in (None, "", [], {})))
    if data.get("validation_files"):
        parts.append(f"validation on {len(data['validation_files'])} separate file(s)")
    elif isinstance(data.get("validation_fraction"), (int, float)):
        parts.append(f"{data['validation_fraction']:.0%} of the documents held out for validation")
    return "; ".join(parts)


def estimate_flops(model_cfg, info: dict) -> tuple[float | None, bool]:
    """(training FLOPs, exact?): the logged total when the trainer recorded one, else tokens x FLOPs per token."""
    if info.get("flops"):
        return float(info["flops"]), True
    tokens, seq_len = info.get("tokens"), info.get("seq_len") or model_cfg.max_seq_len
    if not tokens:
        return None, False
    seq_len = min(int(seq_len), model_cfg.max_seq_len)
    return float(tokens) * model_cfg.flops_per_token(seq_len), False


def plot_loss(rows: list[dict], path: Path) -> bool:
    """Train loss by step (and validation loss points) as a PNG; False when there is nothing to plot."""
    train = [(r["step"], r["loss"]) for r in rows if r.get("split", "train") != "val"
             and isinstance(r.get("loss"), (int, float)) and isinstance(r.get("step"), (int, float))]
    val = [(r["step"], r["loss"]) for r in rows if r.get("split") == "val"
           and isinstance(r.get("loss"), (int, float)) and isinstance(r.get("step"), (int, float))]
    if not train and not val:
        return False
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _human(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def _table(rows: list[tuple]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def render_model_card(info: dict, model_cfg, family: str, hf_class: str, license: str | None = None,
                      repo_id: str | None = None, has_plot: bool = False, tokenizer=None):
    """A huggingface_hub.ModelCard for the exported model."""
    from huggingface_hub import ModelCard, ModelCardData

    arch = model_cfg.arch
    objective = info.get("objective") or {}
    obj_name = objective.get("name")
    source = info.get("source") or {}
    tags = ["unified-pretrain", family, "pretraining"] + ([OBJECTIVE_TAGS[obj_name]] if obj_name in OBJECTIVE_TAGS
                                                         else [])
    datasets = hub_datasets(info.get("data") or {})
    data = ModelCardData(library_name="transformers", pipeline_tag=PIPELINE_TAGS[arch], tags=tags,
                         license=license or None, datasets=datasets or None,
                         base_model=source.get("source") if source.get("hub") else None)

    name = repo_id or Path(info.get("out", "model")).name
    where = repo_id or "path/to/this/folder"
    flops, exact = estimate_flops(model_cfg, info)
    n_params = model_cfg.num_params()
    arch_rows = [("family / class", f"{family} / `{hf_class}`"), ("shape", arch),
                 ("parameters", f"{n_params:,} ({_human(n_params)})"), ("d_model", model_cfg.d_model),
                 ("layers", model_cfg.n_layers if arch != "encoder-decoder"
                  else f"{model_cfg.n_layers} encoder + {model_cfg.decoder_layers} decoder"),
                 ("attention heads", model_cfg.n_heads if model_cfg.kv_heads == model_cfg.n_heads
                  else f"{model_cfg.n_heads} (KV {model_cfg.kv_heads})"),
                 ("feed-forward", f"{model_cfg.d_ff} ({model_cfg.activation})"),
                 ("positions", f"{model_cfg.position}, max {model_cfg.max_seq_len}"),
                 ("norm", f"{model_cfg.norm}, {model_cfg.norm_placement}-norm"),
                 ("vocabulary", model_cfg.vocab_size), ("tied embeddings", model_cfg.tie_embeddings)]
    optim = info.get("optim") or {}
    options = objective.get("options") or {}
    obj_rows = [("objective", f"`{obj_name}`: {OBJECTIVE_NAMES.get(obj_name, obj_name)}" if obj_name else "unknown")]
    obj_rows += [(f"option `{k}`", _fmt(v)) for k, v in options.items()]
    for key, label in (("seq_len", "sequence length"), ("batch_size", "batch size per process"),
                       ("grad_accum", "gradient accumulation")):
        if info.get(key) is not None:
            obj_rows.append((label, info[key]))
    for key in ("lr", "schedule", "warmup_steps", "weight_decay", "min_lr_ratio", "grad_clip"):
        if key in optim:
            obj_rows.append((f"optim `{key}`", _fmt(optim[key])))

    data_cfg = info.get("data") or {}
    corpus = describe_corpus(data_cfg)
    tok_cfg = info.get("tokenizer_config") or {}
    tok_desc = (f"loaded from `{Path(str(tok_cfg['path'])).name}`" if tok_cfg.get("path") else
                ", ".join(f"{k}: `{tok_cfg[k]}`" for k in ("kind", "vocab_size") if tok_cfg.get(k)))
    tok_desc = tok_desc or "saved with the run"
    if tokenizer is not None:
        special = ", ".join(f"`{t}`" for t in tokenizer.all_special_tokens[:8])
        tok_desc += f"; {len(tokenizer)} tokens, special: {special}"

    tokens = info.get("tokens")
    compute = "unknown" if not flops else f"{flops:.3g} FLOPs" if exact else \
        f"≈ {flops:.3g} FLOPs (estimated: tokens × training FLOPs per token)"
    train_rows = [("checkpoint", info.get("checkpoint")), ("steps", _fmt(info.get("step"))),
                  ("tokens seen", f"{tokens:,} ({_human(tokens)})" if tokens else "unknown"), ("compute", compute)]
    if info.get("elapsed"):
        train_rows.append(("wall time", f"{info['elapsed'] / 3600:.2f} h" if info["elapsed"] > 3600
                           else f"{info['elapsed']:.0f} s"))
    val = info.get("val") or {}
    val_text = _table([(k, _fmt(v)) for k, v in val.items()]) if val else "No validation metrics were recorded."

    auto = AUTO_CLASSES[arch]
    mask = tokenizer.mask_token if tokenizer is not None and tokenizer.mask_token else "[MASK]"
    if arch == "encoder":
        usage = (f'from transformers import pipeline\n\nfill = pipeline("fill-mask", model="{where}")\n'
                 f'print(fill("The capital of France is {mask}."))')
    elif arch == "decoder":
        usage = (f'from transformers import pipeline\n\ngenerate = pipeline("text-generation", model="{where}")\n'
                 f'print(generate("Once upon a time", max_new_tokens=30))')
    else:
        usage = (f'from transformers import AutoTokenizer, {auto}\n\n'
                 f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
                 f'model = {auto}.from_pretrained("{where}")\n'
                 f'inputs = tokenizer("The quick brown fox", return_tensors="pt")\n'
                 f'print(tokenizer.decode(model.generate(**inputs, max_new_tokens=30)[0], skip_special_tokens=True))')
    origin = f"Imported from `{source['source']}` and " if source.get("source") else ""
    body = f"""
# {name}

A {family.upper() if family in ('bert', 'bart') else family.capitalize()}-architecture model ({arch}) pretrained \
from scratch with {OBJECTIVE_NAMES.get(obj_name, 'an unrecorded objective')} using the unified-pretrain toolkit. \
{origin}Exported to the native `transformers` class `{hf_class}`: no custom code and no `trust_remote_code`.

## Architecture

{_table(arch_rows)}

## Objective and training settings

{_table(obj_rows)}

## Data

- Corpus: {corpus}
- Tokenizer: {tok_desc}

## Training

{_table(train_rows)}

## Final validation metrics

{val_text}

## Loss curve

{f"![loss curve]({LOSS_PLOT})" if has_plot else "No metrics were logged for this run."}

## Usage

```python
{usage}
```

Load it directly with `AutoTokenizer.from_pretrained("{where}")` and `{auto}.from_pretrained("{where}")`.

## Limitations

A small research / educational pretraining run: it has seen {_human(info.get('tokens'))} tokens, has not been
fine-tuned or aligned, and reproduces the biases of its corpus.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_model_card(folder, info: dict, model_cfg, family: str, hf_class: str, license: str | None = None,
                     repo_id: str | None = None, tokenizer=None) -> Path:
    """README.md (+ loss_curve.png when metrics were logged, + training_config.json) in folder."""
    folder = Path(folder)
    has_plot = plot_loss(info.get("metrics") or [], folder / LOSS_PLOT)
    card = render_model_card(info, model_cfg, family, hf_class, license, repo_id, has_plot, tokenizer)
    card.save(str(folder / "README.md"))
    if info.get("config"):
        (folder / "training_config.json").write_text(json.dumps(info["config"], indent=2, default=str))
    return folder / "README.md"


__all__ = ["write_model_card", "render_model_card", "plot_loss", "PIPELINE_TAGS", "AUTO_CLASSES"]
