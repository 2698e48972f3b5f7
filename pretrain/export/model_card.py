"""The README.md of an exported model: Hub metadata (YAML front matter) and what a reader needs to know about the
model -- architecture, objective and its settings, corpus, tokens seen, compute, final validation metrics, the loss
curve (loss_curve.png beside it) and how to use it. `card_facts` gathers, `card_markdown` writes."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from huggingface_hub import ModelCard, ModelCardData  # noqa: E402

from models import get_family, num_params  # noqa: E402
from objectives import OBJECTIVES  # noqa: E402

from .. import document  # noqa: E402
from ..data.corpus import describe_corpus  # noqa: E402
from ..data.tokenizer import SENTINELS  # noqa: E402
from ..train.run_dir import RunDir  # noqa: E402
from .compat import VERIFIED_WITH  # noqa: E402
from .score_card import zero_shot_lines  # noqa: E402

# tasks of transformers 5's pipelines.SUPPORTED_TASKS and of the Hub: 5.x removed text2text-generation, and the Hub
# files encoder-decoders under text-generation (the usage example loads them with AutoModelForSeq2SeqLM)
PIPELINE_TAGS = {"encoder": "fill-mask", "decoder": "text-generation", "encoder-decoder": "text-generation"}
DEFAULT_LICENSE = "apache-2.0"  # the project's (pyproject.toml); --license overrides
FIM_PROMPT = "<fim_prefix>Once upon a time<fim_suffix> happily ever after.<fim_middle>"
AUTO_CLASSES = {"encoder": "AutoModelForMaskedLM", "decoder": "AutoModelForCausalLM",
                "encoder-decoder": "AutoModelForSeq2SeqLM"}
LOSS_PLOT = "loss_curve.png"


def estimate_flops(model_cfg, record) -> tuple[float | None, bool]:
    """(training FLOPs, exact?): the logged total when the trainer recorded one, else tokens x FLOPs per token."""
    if record.flops:
        return float(record.flops), True
    if not record.tokens:
        return None, False
    seq_len = record.config.run.seq_len if record.config else model_cfg.max_seq_len
    return float(record.tokens) * model_cfg.flops_per_token(min(int(seq_len), model_cfg.max_seq_len)), False


def plot_loss(rows: list[dict], path: Path) -> bool:
    """Train loss by step (and validation loss points) as a PNG; False when there is nothing to plot."""
    def points(is_val):
        return [(r["step"], r["loss"]) for r in rows if r.get("split", "train") == ("val" if is_val else "train")
                and isinstance(r.get("loss"), (int, float)) and isinstance(r.get("step"), (int, float))]

    train, val = points(False), points(True)
    if not train and not val:
        return False
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
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _human(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


# ---- gathering ---------------------------------------------------------------------------------------------------
def card_facts(record, model_cfg, family: str, hf_class: str, tokenizer=None, name: str = "model",
               repo_id: str | None = None, license: str | None = None, has_plot: bool = False) -> dict:
    """Everything the card says, as plain values."""
    cfg = record.config
    arch = model_cfg.arch
    objective = OBJECTIVES.get(record.objective_name)
    source = record.source or {}
    n_params = num_params(model_cfg)
    facts = {
        "name": repo_id or name, "where": repo_id or "path/to/this/folder", "family": family,
        "family_title": get_family(family).title, "hf_class": hf_class,
        "arch": arch, "lm_head": not model_cfg.head_outputs, "license": license or DEFAULT_LICENSE,
        "has_plot": has_plot, "versions": VERIFIED_WITH,
        "tokens": record.tokens,
        "objective": record.objective_name, "objective_title": objective.title if objective else None,
        "hub_tags": ["unified-pretrain", family, "pretraining"] + ([objective.hub_tag] if objective else []),
        "hub_datasets": [cfg.data.hub_dataset] if cfg and cfg.data.hub_dataset else [],
        "base_model": source.get("source") if source.get("hub") else None, "origin": source.get("source"),
        "mask_token": tokenizer.mask_token if tokenizer is not None and tokenizer.mask_token else "[MASK]",
        "sentinel": _has(tokenizer, SENTINELS[0]), "fim": _has(tokenizer, "<fim_prefix>"),
        "paradigm": "[NLU]" if _has(tokenizer, "[NLU]") else "",
    }
    facts["architecture"] = [
        ("family / class", f"{family} / `{hf_class}`"), ("shape", arch),
        ("parameters", f"{n_params:,} ({_human(n_params)})"), ("d_model", model_cfg.d_model),
        ("layers", model_cfg.n_layers if arch != "encoder-decoder"
         else f"{model_cfg.n_layers} encoder + {model_cfg.decoder_layers} decoder"),
        ("attention heads", model_cfg.n_heads if model_cfg.kv_heads == model_cfg.n_heads
         else f"{model_cfg.n_heads} (KV {model_cfg.kv_heads})"),
        ("feed-forward", f"{model_cfg.d_ff} ({model_cfg.activation})"),
        ("positions", f"{model_cfg.position}, max {model_cfg.max_seq_len}"),
        ("norm", f"{model_cfg.norm}, {model_cfg.norm_placement}-norm"),
        ("vocabulary", model_cfg.vocab_size), ("tied embeddings", model_cfg.tie_embeddings)]
    settings = [("objective", f"`{record.objective_name}`: {facts['objective_title'] or record.objective_name}"
                 if record.objective_name else "unknown")]
    if cfg:
        settings += [(f"option `{k}`", _fmt(v)) for k, v in cfg.objective.options.items()]
        settings.append(("attention in packed blocks", "inside each document (document masking)"
                         if cfg.objective.document_masking else "across the whole block"))
        settings += [("sequence length", cfg.run.seq_len), ("batch size per process", cfg.run.batch_size),
                     ("gradient accumulation", cfg.run.grad_accum)]
        optim = dataclasses.asdict(cfg.optim)
        settings += [(f"optim `{k}`", _fmt(optim[k]))
                     for k in ("lr", "schedule", "warmup_steps", "weight_decay", "min_lr_ratio", "grad_clip")]
    facts["settings"] = settings
    facts["corpus"] = describe_corpus(cfg.data) if cfg else "not recorded"
    facts["tokenizer"] = _describe_tokenizer(cfg, tokenizer)
    flops, exact = estimate_flops(model_cfg, record)
    compute = "unknown" if not flops else f"{flops:.3g} FLOPs" if exact else \
        f"≈ {flops:.3g} FLOPs (estimated: tokens × training FLOPs per token)"
    training = [("checkpoint", record.checkpoint), ("steps", _fmt(record.step)),
                ("tokens seen", f"{record.tokens:,} ({_human(record.tokens)})" if record.tokens else "unknown"),
                ("compute", compute)]
    if record.elapsed:
        training.append(("wall time", f"{record.elapsed / 3600:.2f} h" if record.elapsed > 3600
                         else f"{record.elapsed:.0f} s"))
    facts["training"] = training
    facts["val"] = [(k, _fmt(v)) for k, v in record.val.items()]
    facts["downstream"] = [downstream_line(task, r) for task, r in RunDir(record.run_dir).finetune_results().items()]
    facts["downstream"] += zero_shot_lines(record.run_dir)
    return facts


def _median_of(results: dict, mode: str, init: str, split: str) -> str | None:
    block = results.get(mode, {}).get(init)
    try:
        value = block["spread"][split]["accuracy"]["median"]
    except (KeyError, TypeError):
        return None
    return f"{value:.3f}" + (f" (median of {len(block['per_seed'])} seeds)" if len(block["per_seed"]) > 1 else "")


def downstream_line(task: str, results: dict) -> str:
    """One line per task `pretrain finetune` scored this run on (RUN/finetune/<task>/results.json)."""
    sizes = results.get("task", {}).get("sizes", {})
    split = "test" if "test" in sizes else "validation"
    parts = []
    for mode, title in (("finetune", "fine-tuned"), ("probe", "linear probe")):
        ours, base = _median_of(results, mode, "pretrained", split), _median_of(results, mode, "random_init", split)
        if ours:
            parts.append(f"{title} accuracy {ours}" + (f", random init {base}" if base else ""))
    majority = results.get("majority", {}).get(split)
    if majority is not None:
        parts.append(f"majority class {majority:.3f}")
    return f"`{task}` ({split} split, {sizes.get(split, '?')} examples): " + "; ".join(parts)


def _has(tokenizer, token: str) -> bool:
    return tokenizer is not None and token in tokenizer.get_vocab()


def _describe_tokenizer(cfg, tokenizer) -> str:
    tok_cfg = cfg.tokenizer if cfg else None
    if tok_cfg is None:
        text = "saved with the run"
    elif tok_cfg.path:
        text = f"loaded from `{Path(str(tok_cfg.path)).name}`"
    else:
        text = f"kind: `{tok_cfg.kind}`, vocab_size: `{tok_cfg.vocab_size}`"
    if tokenizer is not None:
        special = [t for t in tokenizer.all_special_tokens if t not in SENTINELS]
        sentinels = [t for t in SENTINELS if t in tokenizer.get_vocab()]
        text += f"; {len(tokenizer)} tokens, special: {', '.join(f'`{t}`' for t in special)}"
        if sentinels:
            text += f", and {len(sentinels)} sentinels `{sentinels[0]}` … `{sentinels[-1]}`"
        example = tokenizer("Hello")["input_ids"]
        text += f"; a text is encoded as `{' '.join(tokenizer.convert_ids_to_tokens(example))}` (\"Hello\")"
    return text


# ---- writing -----------------------------------------------------------------------------------------------------
def _loader(facts: dict) -> str:
    """The class to load it with: the Auto class of its shape, or its own class when its head predicts no tokens
    (ELECTRA's discriminator: AutoModelForMaskedLM would build the generator's class)."""
    return AUTO_CLASSES[facts["arch"]] if facts["lm_head"] else facts["hf_class"]


def _usage(facts: dict) -> str:
    """Code that runs as printed on this export (tests exec it): a prompt continued, a mask filled, a sentinel
    answered."""
    where, auto, arch = facts["where"], _loader(facts), facts["arch"]
    if not facts["lm_head"]:
        return (f'from transformers import AutoTokenizer, {auto}\n\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
                f'model = {auto}.from_pretrained("{where}")\n'
                f'print(model(**tokenizer("The quick brown fox", return_tensors="pt")).logits)  # one per token')
    if arch == "encoder":
        return (f'from transformers import pipeline\n\nfill = pipeline("fill-mask", model="{where}")\n'
                f'print(fill("The capital of France is {facts["mask_token"]}."))')
    if arch == "decoder":
        prompt, note = (FIM_PROMPT, "  # the middle, after <fim_middle>") if facts["fim"] else \
            ("Once upon a time", "  # the prompt, continued")
        return (f'from transformers import pipeline\n\ngenerate = pipeline("text-generation", model="{where}")\n'
                f'print(generate("{prompt}", max_new_tokens=30, do_sample=False)[0]["generated_text"]){note}')
    if facts["sentinel"]:  # span corruption / UL2: the model answers each sentinel with the span it stands for
        paradigm = f'{facts["paradigm"]} ' if facts["paradigm"] else ""  # UL2's mode token: R-denoiser
        prompt = f"{paradigm}The quick brown {SENTINELS[0]} over the lazy dog."
        decode = "skip_special_tokens=False"
        note = "  # <extra_id_0> followed by the missing words"
    else:
        prompt, decode = f'The quick brown {facts["mask_token"]} over the lazy dog.', "skip_special_tokens=True"
        note = "  # the text, with the mask filled in"
    return (f'from transformers import AutoTokenizer, {auto}\n\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
            f'model = {auto}.from_pretrained("{where}")\n'
            f'inputs = tokenizer("{prompt}", return_tensors="pt")\n'
            f'output = model.generate(**inputs, max_new_tokens=30, do_sample=False)\n'
            f'print(tokenizer.decode(output[0], {decode})){note}')


def card_markdown(facts: dict) -> str:
    origin = f"Imported from `{facts['origin']}` and " if facts["origin"] else ""
    how = facts["objective_title"] or "an unrecorded objective"
    return document.join(
        f"# {facts['name']}",
        f"A {facts['family_title']}-architecture model ({facts['arch']}) pretrained from scratch with {how} using the "
        f"unified-pretrain toolkit. {origin}Exported to the native `transformers` class `{facts['hf_class']}`: no "
        f"custom code and no `trust_remote_code`.",
        "## Architecture", document.key_values(facts["architecture"]),
        "## Objective and training settings", document.key_values(facts["settings"]),
        "## Data", document.bullets([f"Corpus: {facts['corpus']}", f"Tokenizer: {facts['tokenizer']}"]),
        "## Training", document.key_values(facts["training"]),
        "## Final validation metrics",
        document.key_values(facts["val"]) if facts["val"] else "No validation metrics were recorded.",
        *(["## Downstream evaluation", document.bullets(facts["downstream"]) + "\n\nFrom `pretrain finetune` "
            "(transformers' sequence classifier on this model; the random-init baseline has the same architecture "
            "and recipe)."] if facts["downstream"] else []),
        "## Loss curve",
        document.image("loss curve", LOSS_PLOT) if facts["has_plot"] else "No metrics were logged for this run.",
        "## Usage", document.code(_usage(facts), "python"),
        f"Load it directly with `AutoTokenizer.from_pretrained(\"{facts['where']}\")` and "
        f"`{_loader(facts)}.from_pretrained(\"{facts['where']}\")`. Verified to load, tokenize and compute the same "
        f"logits with transformers {' and '.join(facts['versions'])} (`benchmarks/export_compat.py`).",
        "## License", f"`{facts['license']}`.",
        "## Limitations",
        f"A small research / educational pretraining run: it has seen {_human(facts['tokens'])} tokens, has not "
        f"been fine-tuned or aligned, and reproduces the biases of its corpus.")


def render_model_card(facts: dict) -> ModelCard:
    data = ModelCardData(library_name="transformers",
                         pipeline_tag=PIPELINE_TAGS[facts["arch"]] if facts["lm_head"] else None,
                         tags=facts["hub_tags"], license=facts["license"],
                         datasets=facts["hub_datasets"] or None, base_model=facts["base_model"])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_markdown(facts)}")


def write_model_card(folder, record, model_cfg, family: str, hf_class: str, license: str | None = None,
                     repo_id: str | None = None, tokenizer=None, name: str | None = None) -> Path:
    """README.md (+ loss_curve.png when metrics were logged, + training_config.json) in folder."""
    folder = Path(folder)
    has_plot = plot_loss(record.metrics, folder / LOSS_PLOT)
    facts = card_facts(record, model_cfg, family, hf_class, tokenizer, name or folder.name, repo_id, license,
                       has_plot)
    render_model_card(facts).save(str(folder / "README.md"))
    if record.config is not None:
        (folder / "training_config.json").write_text(json.dumps(dataclasses.asdict(record.config), indent=2,
                                                                default=str))
    return folder / "README.md"
