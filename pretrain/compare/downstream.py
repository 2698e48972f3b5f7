"""The comparison's downstream section: every trained (run, seed) probed and fine-tuned on one labelled task
(pretrain/evaluate, the same recipe for all), each beside a random-init model of its own architecture.

    task = check_task(cfg)                        # before anything trains: a bad task is refused at once
    evaluate_runs(cfg, task, runs)                # RUN/finetune/<task>/results.json per run (reused when current)
    facts = downstream_facts(cfg, runs, out)      # per run: medians and ranges, verdicts in words, a plot
    downstream_markdown(facts, picture) -> str

A difference counts as larger than the noise when the two medians differ by more than twice the noise: the larger of
the two min-max ranges (over pretraining seeds when there are several, each seed's value the median of its
fine-tuning seeds, else over fine-tuning seeds; a random-init baseline's over its init seeds) and the sampling error
of the difference of two accuracies on the split's n examples, sqrt(p1(1-p1)/n + p2(1-p2)/n). The second matters
where a cell is one fit (a probe of one pretraining seed has no range): without it any gap would count.
Encoder-decoders are read two ways (transformers' decoder-pooled classifier and the encoder's mean-pooled states);
the headline and ranking use the better-founded one (headline_pooling). The bag-of-words baseline is a reference
line.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .. import document  # noqa: E402
from ..atomic import write_text_atomic  # noqa: E402
from ..evaluate.bow import bag_of_words  # noqa: E402
from ..evaluate.classifier import open_backbone  # noqa: E402
from ..evaluate.evaluate import evaluate, headline_split  # noqa: E402
from ..evaluate.recipe import FinetuneRecipe, ProbeRecipe  # noqa: E402
from ..evaluate.tasks import TaskSpec, load_task  # noqa: E402
from ..errors import ConfigError  # noqa: E402

CELLS = [("probe", "pretrained"), ("probe", "random_init"), ("finetune", "pretrained"), ("finetune", "random_init")]
TITLES = {("probe", "pretrained"): "probe, pretrained", ("probe", "random_init"): "probe, random init",
          ("finetune", "pretrained"): "fine-tuned, pretrained", ("finetune", "random_init"): "fine-tuned, random init"}


# ---- configuration -----------------------------------------------------------------------------------------------
def recipes(section) -> tuple[FinetuneRecipe, ProbeRecipe]:
    names = {f.name for f in dataclasses.fields(FinetuneRecipe)}
    unknown = sorted(set(section.recipe) - names)
    if unknown:
        raise ConfigError(f"downstream.recipe has unknown key(s) {unknown}; use some of {sorted(names)}")
    recipe = FinetuneRecipe(**section.recipe)
    return recipe, ProbeRecipe(max_length=recipe.max_length)


def task_spec(section) -> TaskSpec:
    names = {f.name for f in dataclasses.fields(TaskSpec)} - {"task"}
    unknown = sorted(set(section.task_options) - names)
    if unknown:
        raise ConfigError(f"downstream.task_options has unknown key(s) {unknown}; use some of {sorted(names)}")
    return TaskSpec(task=section.task, **section.task_options)


def modes(section) -> tuple[str, ...]:
    return ("probe", "finetune") if section.mode == "both" else (section.mode,)


def check_task(cfg):
    """The task, loaded and checked (None when the comparison has no downstream evaluation)."""
    section = cfg.downstream
    if not section.task:
        return None
    recipes(section)
    return load_task(task_spec(section))


# ---- running -----------------------------------------------------------------------------------------------------
def _settings(cfg, task) -> dict:
    recipe, probe_recipe = recipes(cfg.downstream)
    settings = {"recipes": {"finetune": dataclasses.asdict(recipe), "probe": dataclasses.asdict(probe_recipe)},
                "seeds": list(range(cfg.downstream.seeds)), "sizes": {s: task.size(s) for s in task.splits},
                "modes": sorted(modes(cfg.downstream)), "baseline": cfg.downstream.baseline,
                "encoder_pooling": cfg.downstream.encoder_pooling}
    return json.loads(json.dumps(settings))  # as results.json holds them (tuples become lists)


def _current(path: Path, settings: dict) -> bool:
    """results.json exists and was computed with these settings."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return {"recipes": old.get("recipes"), "seeds": old.get("seeds"), "sizes": old.get("task", {}).get("sizes"),
            "modes": sorted(m for m in ("probe", "finetune") if m in old),
            "baseline": all("random_init" in old[m] for m in ("probe", "finetune") if m in old),
            "encoder_pooling": old.get("encoder_pooling", False)} == settings


def evaluate_runs(cfg, task, runs, log=print):
    """Probe and fine-tune every finished (run, seed); a results.json made with the same settings is reused. The
    random-init baseline is the same for every pretraining seed (the architecture and the init seeds are), so only
    a run's first seed trains it."""
    if task is None:
        return
    recipe, probe_recipe = recipes(cfg.downstream)
    for i, t in enumerate(runs, 1):
        if not t.run_dir.finished():
            continue
        baseline = cfg.downstream.baseline and t.seed_index == 0
        settings = {**_settings(cfg, task), "baseline": baseline}
        path = t.run_dir.finetune / task.name / t.run_dir.FINETUNE_RESULTS
        label = t.name if t.seed_index == 0 else f"{t.name} (seed {t.seed})"
        if _current(path, settings):
            log(f"[downstream {i}/{len(runs)}] {label}: done already ({path}), reused")
            continue
        log(f"[downstream {i}/{len(runs)}] {label} on {task.name} ({', '.join(modes(cfg.downstream))}, "
            f"{cfg.downstream.seeds} seeds{', random-init baseline' if baseline else ''}) ...")
        with tempfile.TemporaryDirectory(prefix="pretrain-compare-downstream-") as workdir:
            backbone = open_backbone(t.run_dir.path, Path(workdir))
            results = evaluate(backbone, task, modes(cfg.downstream), tuple(range(cfg.downstream.seeds)),
                               baseline, recipe, probe_recipe, progress=cfg.progress, log=log,
                               encoder_pooling=cfg.downstream.encoder_pooling)
        results["encoder_pooling"] = cfg.downstream.encoder_pooling
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(results, indent=2))


# ---- facts -------------------------------------------------------------------------------------------------------
MODE_KEYS = {"native": {"probe": "probe", "finetune": "finetune"},
             "encoder": {"probe": "probe_encoder", "finetune": "finetune_encoder"}}
POOLING_WORDS = {"native": "transformers' classifier", "encoder": "encoder-pooled"}


def _accuracies(result: dict, mode: str, init: str, split: str) -> list[float]:
    """One results.json's accuracies of one cell, one per fine-tuning (or init) seed."""
    return [r[split]["accuracy"] for r in result.get(mode, {}).get(init, {}).get("per_seed", []) if split in r]


def cell_values(results: list[dict], mode: str, init: str, split: str) -> tuple[list[float], str]:
    """The values a cell's median and spread are taken over, and what they vary over. Pretrained with several
    pretraining seeds: each pretraining seed's median over its fine-tuning seeds (the spread is then the noise of
    pretraining itself, not only of fine-tuning); pretrained with one: the fine-tuning seeds. Random init: the
    init seeds (the same for every pretraining seed: only the first seed's results.json holds them)."""
    if init == "pretrained" and len(results) > 1:
        medians = [statistics.median(v) for v in (_accuracies(r, mode, init, split) for r in results) if v]
        return medians, "pretraining seeds"
    return _accuracies(results[0], mode, init, split), ("fine-tuning seeds" if init == "pretrained" else
                                                        "init seeds")


def _stats(values: list[float], over: str = "seeds", examples: int | None = None) -> dict | None:
    """examples: how many examples each accuracy is measured on (the split's size), for its sampling error."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "range": max(values) - min(values), "over": over, "examples": examples}


def sampling_error(a: dict, b: dict) -> float:
    """Standard error of the difference of the two medians read as accuracies on independent samples of the
    split's examples (0 when a cell does not say how many)."""
    if not a.get("examples") or not b.get("examples"):
        return 0.0
    return math.sqrt(sum(c["median"] * (1 - c["median"]) / c["examples"] for c in (a, b)))


def _differs(a: dict, b: dict) -> tuple[float, float, bool]:
    """(difference of medians, the noise, larger than twice the noise?); the noise is the larger of the two
    min-max ranges and the sampling error of the difference."""
    gap, noise = a["median"] - b["median"], max(a["range"], b["range"], sampling_error(a, b))
    return gap, noise, abs(gap) > 2 * noise


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def headline_pooling(model_type: str, poolings: list[str]) -> str:
    """The better-founded reading of a model for the headline: a T5-shaped model (span corruption, UL2) by its
    encoder, since its decoder never read the text in pretraining; every other model by transformers' own
    classifier (BART's decoder reads the whole text)."""
    return "encoder" if model_type == "t5" and "encoder" in poolings else "native"


def _rows_of(name: str, results: list[dict], split: str) -> list[dict]:
    model_type = results[0].get("model", {}).get("model_type", "")
    poolings = [p for p, keys in MODE_KEYS.items() if any(k in results[0] for k in keys.values())]
    best = headline_pooling(model_type, poolings)
    examples = results[0].get("task", {}).get("sizes", {}).get(split)
    rows = []
    for pooling in poolings:
        cells = {}
        for mode, init in CELLS:
            values, over = cell_values(results, MODE_KEYS[pooling][mode], init, split)
            cells[f"{mode}/{init}"] = _stats(values, over, examples)
        label = name if len(poolings) == 1 else \
            f"{name} ({'encoder-pooled' if pooling == 'encoder' else 'decoder-pooled'})"
        rows.append({"name": name, "label": label, "pooling": pooling, "headline": pooling == best,
                     "model_type": model_type, "cells": cells, "pretraining_seeds": len(results),
                     "finetune_seeds": len(results[0]["seeds"])})
    return rows


def ranking(rows: list[dict], cell: str) -> dict:
    """Every pair of arms (their headline readings) whose medians in `cell` differ by more than twice the noise,
    best first; the rest of the pairs are not separable at this budget."""
    ranked = sorted((r for r in rows if r["headline"] and r["cells"][cell]), key=lambda r: -r["cells"][cell]["median"])
    clear, unclear = [], []
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            gap, noise, separated = _differs(a["cells"][cell], b["cells"][cell])
            (clear if separated else unclear).append({"above": a["label"], "below": b["label"], "gap": gap,
                                                      "noise": noise})
    return {"cell": cell, "order": [r["label"] for r in ranked], "separated": clear, "not_separated": unclear}


def downstream_facts(cfg, task, runs, out: Path) -> dict | None:
    """Per run (and reading, for encoder-decoders): the four cells' median / min / max, the verdicts, the
    ranking, the bag-of-words reference and a plot."""
    if task is None:
        return None
    per_run: dict[str, list[dict]] = {}
    for t in runs:
        path = t.run_dir.finetune / task.name / t.run_dir.FINETUNE_RESULTS
        if path.is_file():
            per_run.setdefault(t.name, []).append(json.loads(path.read_text()))
    if not per_run:
        return None
    first = next(iter(per_run.values()))[0]
    split = headline_split(first)
    rows = [row for name, results in per_run.items() for row in _rows_of(name, results, split)]
    verdicts = []
    for row in rows:
        for mode, what in (("finetune", "fine-tuned"), ("probe", "probed")):
            ours, base = row["cells"][f"{mode}/pretrained"], row["cells"][f"{mode}/random_init"]
            if ours and base:
                gap, noise, clear = _differs(ours, base)
                word = ("beats" if gap > 0 else "falls behind") if clear else "is within the noise of"
                verdicts.append(f"*{row['label']}* {what}: {_pct(ours['median'])}% {word} its random-init baseline "
                                f"({_pct(base['median'])}%): {gap * 100:+.1f} points, "
                                f"{'more' if clear else 'not more'} than twice the noise ({_pct(noise)} points)")
    beaten = {mode: [row["label"] for row in rows if row["headline"] and _beats(row, mode)]
              for mode in ("finetune", "probe")}
    ranks = {mode: ranking(rows, f"{mode}/pretrained") for mode in ("finetune", "probe")}
    said = {True: "larger than twice the noise: a real difference",
            False: "within twice the noise: not separable at this budget"}
    pairs = [f"*{p['above']}* vs *{p['below']}*: {p['gap'] * 100:+.1f} points, {said[sep]} ({_pct(p['noise'])} "
             f"points)"
             for sep, p in sorted([(True, p) for p in ranks["finetune"]["separated"]] +
                                  [(False, p) for p in ranks["finetune"]["not_separated"]],
                                  key=lambda x: -x[1]["gap"])]
    bow = bag_of_words(task, recipes(cfg.downstream)[1]) if cfg.downstream.bag_of_words else None
    bow_line = {"accuracy": bow[split]["accuracy"], "l2": bow["l2"], "vocabulary": bow["vocabulary"]} if bow else None
    plot = plot_downstream(rows, first["majority"].get(split), split, Path(out) / "plots" / "downstream.png",
                           bow_line["accuracy"] if bow_line else None)
    return {"task": first["task"], "split": split, "majority": first["majority"].get(split),
            "recipes": first["recipes"], "seeds": first["seeds"], "rows": rows, "verdicts": verdicts,
            "pairs": pairs, "ranking": ranks, "beats_baseline": beaten, "bag_of_words": bow_line,
            "plot": str(plot)}


def _beats(row: dict, mode: str) -> bool:
    ours, base = row["cells"][f"{mode}/pretrained"], row["cells"][f"{mode}/random_init"]
    return bool(ours and base and _differs(ours, base)[0] > 0 and _differs(ours, base)[2])


def _readings(rows: list[dict]) -> str:
    """Which reading the headline uses, where a run has two."""
    two = [r for r in rows if r["headline"] and sum(o["name"] == r["name"] for o in rows) > 1]
    if not two:
        return ""
    encoder = [r["name"] for r in two if r["pooling"] == "encoder"]
    native = [r["name"] for r in two if r["pooling"] == "native"]
    parts = ([f"{', '.join(encoder)} by the encoder's mean-pooled states (their decoders never read the text in "
              f"pretraining)"] if encoder else []) + \
        ([f"{', '.join(native)} by transformers' decoder-pooled classifier (the decoder reads the whole text)"]
         if native else [])
    return " (encoder-decoders: " + "; ".join(parts) + ")"


def headline(facts: dict) -> str:
    """Plain sentences: which runs pretraining made better than their baseline beyond the noise, which not, and
    the ranking where the differences exceed twice the noise ("not separable at this budget" otherwise)."""
    rows = [r for r in facts["rows"] if r["headline"]]
    names = [row["label"] for row in rows]
    parts = []
    for mode, what in (("finetune", "fine-tuned"), ("probe", "probed")):
        if not any(row["cells"][f"{mode}/random_init"] for row in rows):
            continue
        good = facts["beats_baseline"][mode]
        bad = [n for n in names if n not in good]
        parts.append(f"{what}, {'every run' if not bad else ', '.join(good) or 'no run'} beat its random-init "
                     f"baseline by more than twice the noise" +
                     (f"; {', '.join(bad)} did not: at this budget their pretraining bought nothing these seeds "
                      f"can show (train longer: a larger budget)" if bad else ""))
    sentences = [("**In short:** " + "; ".join(parts) + ".")] if parts else []
    for mode, what in (("finetune", "fine-tuned"), ("probe", "probed")):
        rank = facts.get("ranking", {}).get(mode)
        if not rank or len(rank["order"]) < 2:
            continue
        if rank["separated"]:
            above = "; ".join(f"{p['above']} above {p['below']} ({p['gap'] * 100:+.1f} points, noise "
                              f"{_pct(p['noise'])})" for p in rank["separated"])
            rest = " Every other pair: not separable at this budget." if rank["not_separated"] else ""
            sentences.append(f"**Ranking, {what}**{_readings(facts['rows'])}: {above}.{rest}")
        else:
            sentences.append(f"**Ranking, {what}**{_readings(facts['rows'])}: not separable at this budget (no two "
                             f"runs' medians differ by more than twice the noise).")
    bow = facts.get("bag_of_words")
    if bow:
        above = [r["label"] for r in rows if any(r["cells"][f"{m}/pretrained"] and
                                                  r["cells"][f"{m}/pretrained"]["median"] > bow["accuracy"]
                                                  for m in ("finetune", "probe"))]
        sentences.append(f"**Bag-of-words reference:** {_pct(bow['accuracy'])}%; "
                         + (f"above it (median, probe or fine-tuned): {', '.join(above)}." if above else
                            "no run's median reaches it."))
    return "\n\n".join(sentences)


def plot_downstream(rows: list[dict], majority: float | None, split: str, path: Path,
                    bag_of_words: float | None = None) -> Path:
    """Grouped bars per run (and reading): the four cells' medians, error bars min-max; the majority class and the
    bag-of-words baseline as reference lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(rows)), 4.6))
    width = 0.2
    colors = ["#4c72b0", "#a6bddb", "#dd8452", "#f4c7a6"]
    for j, (mode, init) in enumerate(CELLS):
        xs, vals, errs = [], [], [[], []]
        for i, row in enumerate(rows):
            s = row["cells"][f"{mode}/{init}"]
            if s:
                xs.append(i + (j - 1.5) * width)
                vals.append(100 * s["median"])
                errs[0].append(100 * (s["median"] - s["min"]))
                errs[1].append(100 * (s["max"] - s["median"]))
        if xs:
            ax.bar(xs, vals, width, yerr=errs, capsize=2, color=colors[j], label=TITLES[(mode, init)])
    if majority is not None:
        ax.axhline(100 * majority, color="gray", linestyle="--", linewidth=1, label="majority class")
    if bag_of_words is not None:
        ax.axhline(100 * bag_of_words, color="black", linestyle=":", linewidth=1.2, label="bag of words (reference)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["label"].replace(" (", "\n(") for r in rows], fontsize=8)
    ax.set_ylabel(f"{split} accuracy (%)", fontsize=10)
    ax.set_title("Downstream: median over seeds, error bars min-max", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=True, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- the section -------------------------------------------------------------------------------------------------
def _cell(s: dict | None) -> str:
    if s is None:
        return "n/a"
    if s["min"] == s["max"]:
        return f"{_pct(s['median'])}%"
    return f"{_pct(s['median'])}% [{_pct(s['min'])}–{_pct(s['max'])}]"


def seeds_text(row: dict) -> str:
    """How many pretraining and fine-tuning seeds stand behind a row's pretrained cells."""
    n, f = row["pretraining_seeds"], row["finetune_seeds"]
    if n > 1:
        return f"{n} pretraining seeds (spread across them), each the median of {f} fine-tuning seeds"
    return f"1 pretraining seed; spread across {f} fine-tuning seeds only"


def downstream_markdown(facts: dict | None, picture) -> str:
    if not facts:
        return ""
    task, r = facts["task"], facts["recipes"]["finetune"]
    sizes = ", ".join(f"{n:,} {s}" for s, n in task["sizes"].items())
    headers = ["run", *[TITLES[c] for c in CELLS], "seeds behind the pretrained cells"]
    rows = [[row["label"] + (" *" if row["headline"] and any(o["name"] == row["name"] and o is not row
                                                             for o in facts["rows"]) else ""),
             *[_cell(row["cells"][f"{m}/{i}"]) for m, i in CELLS], seeds_text(row)] for row in facts["rows"]]
    bow = facts.get("bag_of_words")
    if bow:
        rows.append(["bag of words (reference, no pretraining)", f"{_pct(bow['accuracy'])}%", "", "", "",
                     f"deterministic: logistic regression on {bow['vocabulary']:,} word-presence features"])
    majority = f" The majority class scores {_pct(facts['majority'])}%." if facts["majority"] is not None else ""
    two = any(row["pooling"] == "encoder" for row in facts["rows"])
    encoder_note = (" Encoder-decoders are read two ways: *decoder-pooled* is transformers' own classifier "
                    "(`BartForSequenceClassification` / `T5ForSequenceClassification`: the text goes through the "
                    "encoder and the decoder, the head reads the decoder's state at the final `</s>`); "
                    "*encoder-pooled* is a linear head on the mean of the encoder's final states, the decoder "
                    "dropped. The row marked * is the reading the headline and the ranking use: encoder-pooled for "
                    "T5-shaped models (span corruption, UL2), whose decoders never read the text in pretraining; "
                    "decoder-pooled for BART, whose decoder reads the whole text.") if two else ""
    return document.join(
        "## Downstream: what the models can do after pretraining",
        f"Task **{task['name']}**: {task['description'].rstrip('.')} ({len(task['labels'])} classes; {sizes}"
        f"{'; ' + '; '.join(task['notes']) if task.get('notes') else ''}). Each run's final "
        f"model is exported to its transformers class and loaded with `AutoModelForSequenceClassification`; "
        f"*fine-tuned*: every weight trained ({r['epochs']} epochs, lr {r['lr']:g}, batch {r['batch_size']}, "
        f"warmup {r['warmup_ratio']:g}, weight decay {r['weight_decay']:g}, at most {r['max_length']} tokens); "
        f"*probe*: a logistic regression on the frozen model's pooled features (its L2 strength chosen on the "
        f"validation split). *Random init*: the same architecture with fresh weights and the same recipe, so the "
        f"difference is what pretraining bought.{encoder_note} Cells: {facts['split']} accuracy, the median and "
        f"[min–max]: for a pretrained model with several pretraining seeds, over those seeds (each seed's value the "
        f"median over its fine-tuning seeds {facts['seeds']}), else over the fine-tuning seeds; for random init "
        f"over the init seeds. The pretrained model's probe is a convex fit on fixed features, fitted once per "
        f"pretraining seed.{majority}",
        headline(facts),
        document.table(headers, rows),
        picture("downstream", facts["plot"]),
        "**Pretraining against its random-init baseline** (a difference counts when the medians differ by more "
        "than twice the noise: the larger of the two min–max ranges and the sampling error of the difference of "
        "two accuracies on the split's examples, sqrt(p₁(1-p₁)/n + p₂(1-p₂)/n); a single fit has no range, so its "
        "noise is the sampling error):",
        document.bullets(facts["verdicts"]),
        "**Objectives against each other** (fine-tuned, pretrained, the headline reading):" if facts["pairs"] else "",
        document.bullets(facts["pairs"]) if facts["pairs"] else "")
