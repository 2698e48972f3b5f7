"""The comparison's downstream section: every trained (run, seed) probed and fine-tuned on one labelled task
(pretrain/evaluate, the same recipe for all), each beside a random-init model of its own architecture.

    task = check_task(cfg)                        # before anything trains: a bad task is refused at once
    evaluate_runs(cfg, task, runs)                # RUN/finetune/<task>/results.json per run (reused when current)
    facts = downstream_facts(cfg, runs, out)      # per run: medians and ranges, verdicts in words, a plot
    downstream_markdown(facts, picture) -> str

A difference counts as larger than the noise when the two medians differ by more than twice the spread, the spread
being the larger of the two seed ranges (max - min over fine-tuning seeds, pooled over pretraining seeds): the
rule the issue's "beats its random-init baseline by more than twice the fine-tuning spread" names.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .. import document  # noqa: E402
from ..atomic import write_text_atomic  # noqa: E402
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
                "modes": sorted(modes(cfg.downstream)), "baseline": cfg.downstream.baseline}
    return json.loads(json.dumps(settings))  # as results.json holds them (tuples become lists)


def _current(path: Path, settings: dict) -> bool:
    """results.json exists and was computed with these settings."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return {"recipes": old.get("recipes"), "seeds": old.get("seeds"), "sizes": old.get("task", {}).get("sizes"),
            "modes": sorted(m for m in ("probe", "finetune") if m in old),
            "baseline": all("random_init" in old[m] for m in ("probe", "finetune") if m in old)} == settings


def evaluate_runs(cfg, task, runs, log=print):
    """Probe and fine-tune every finished (run, seed); a results.json made with the same settings is reused."""
    if task is None:
        return
    recipe, probe_recipe = recipes(cfg.downstream)
    settings = _settings(cfg, task)
    for i, t in enumerate(runs, 1):
        if not t.run_dir.finished():
            continue
        path = t.run_dir.finetune / task.name / t.run_dir.FINETUNE_RESULTS
        label = t.name if t.seed_index == 0 else f"{t.name} (seed {t.seed})"
        if _current(path, settings):
            log(f"[downstream {i}/{len(runs)}] {label}: done already ({path}), reused")
            continue
        log(f"[downstream {i}/{len(runs)}] {label} on {task.name} ({', '.join(modes(cfg.downstream))}, "
            f"{cfg.downstream.seeds} seeds{', random-init baseline' if cfg.downstream.baseline else ''}) ...")
        with tempfile.TemporaryDirectory(prefix="pretrain-compare-downstream-") as workdir:
            backbone = open_backbone(t.run_dir.path, Path(workdir))
            results = evaluate(backbone, task, modes(cfg.downstream), tuple(range(cfg.downstream.seeds)),
                               cfg.downstream.baseline, recipe, probe_recipe, progress=cfg.progress, log=log)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(results, indent=2))


# ---- facts -------------------------------------------------------------------------------------------------------
def _values(results: list[dict], mode: str, init: str, split: str) -> list[float]:
    """Every seed's accuracy (fine-tuning seeds, pooled over the pretraining seeds)."""
    return [r[split]["accuracy"] for res in results for r in res.get(mode, {}).get(init, {}).get("per_seed", [])
            if split in r]


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "range": max(values) - min(values)}


def _differs(a: dict, b: dict) -> tuple[float, float, bool]:
    """(difference of medians, the spread, larger than twice the spread?)"""
    gap, spread = a["median"] - b["median"], max(a["range"], b["range"])
    return gap, spread, abs(gap) > 2 * spread


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def downstream_facts(cfg, task, runs, out: Path) -> dict | None:
    """Per run (seeds pooled): the four cells' median / min / max, the verdicts, and a plot."""
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
    rows = []
    for name, results in per_run.items():
        cells = {f"{m}/{i}": _stats(_values(results, m, i, split)) for m, i in CELLS}
        rows.append({"name": name, "cells": cells, "pretraining_seeds": len(results),
                     "finetune_seeds": len(results[0]["seeds"])})
    verdicts = []
    for row in rows:
        for mode, what in (("finetune", "fine-tuned"), ("probe", "probed")):
            ours, base = row["cells"][f"{mode}/pretrained"], row["cells"][f"{mode}/random_init"]
            if ours and base:
                gap, spread, clear = _differs(ours, base)
                word = ("beats" if gap > 0 else "falls behind") if clear else "is within the noise of"
                verdicts.append(f"*{row['name']}* {what}: {_pct(ours['median'])}% {word} its random-init baseline "
                                f"({_pct(base['median'])}%): {gap * 100:+.1f} points, "
                                f"{'more' if clear else 'not more'} than twice the spread ({_pct(spread)} points)")
    beaten = {mode: [row["name"] for row in rows if _beats(row, mode)] for mode in ("finetune", "probe")}
    pairs = []
    ranked = sorted((r for r in rows if r["cells"]["finetune/pretrained"]),
                    key=lambda r: -r["cells"]["finetune/pretrained"]["median"])
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            gap, spread, clear = _differs(a["cells"]["finetune/pretrained"], b["cells"]["finetune/pretrained"])
            pairs.append(f"*{a['name']}* vs *{b['name']}*: {gap * 100:+.1f} points, "
                         f"{'larger than twice the spread: a real difference' if clear else 'within twice the spread: not a difference these seeds can show'}"
                         f" ({_pct(spread)} points)")
    plot = plot_downstream(rows, first["majority"].get(split), split, Path(out) / "plots" / "downstream.png")
    return {"task": first["task"], "split": split, "majority": first["majority"].get(split),
            "recipes": first["recipes"], "seeds": first["seeds"], "rows": rows, "verdicts": verdicts,
            "pairs": pairs, "beats_baseline": beaten, "plot": str(plot)}


def _beats(row: dict, mode: str) -> bool:
    ours, base = row["cells"][f"{mode}/pretrained"], row["cells"][f"{mode}/random_init"]
    return bool(ours and base and _differs(ours, base)[0] > 0 and _differs(ours, base)[2])


def headline(facts: dict) -> str:
    """One plain sentence: which runs pretraining made better than their baseline beyond the noise, which not."""
    names = [row["name"] for row in facts["rows"]]
    parts = []
    for mode, what in (("finetune", "fine-tuned"), ("probe", "probed")):
        if not any(row["cells"][f"{mode}/random_init"] for row in facts["rows"]):
            continue
        good = facts["beats_baseline"][mode]
        bad = [n for n in names if n not in good]
        parts.append(f"{what}, {'every run' if not bad else ', '.join(good) or 'no run'} beat its random-init "
                     f"baseline by more than twice the spread" +
                     (f"; {', '.join(bad)} did not: at this budget their pretraining bought nothing these seeds "
                      f"can show (train longer: a larger budget)" if bad else ""))
    return ("**In short:** " + "; ".join(parts) + ".") if parts else ""


def plot_downstream(rows: list[dict], majority: float | None, split: str, path: Path) -> Path:
    """Grouped bars per run: the four cells' medians, error bars min-max."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.4))
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
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["name"] for r in rows], fontsize=9)
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


def downstream_markdown(facts: dict | None, picture) -> str:
    if not facts:
        return ""
    task, r = facts["task"], facts["recipes"]["finetune"]
    sizes = ", ".join(f"{n:,} {s}" for s, n in task["sizes"].items())
    headers = ["run", *[TITLES[c] for c in CELLS], "fine-tuning seeds"]
    rows = [[row["name"], *[_cell(row["cells"][f"{m}/{i}"]) for m, i in CELLS],
             f"{row['finetune_seeds']}" + (f" x {row['pretraining_seeds']} pretraining seeds"
                                          if row["pretraining_seeds"] > 1 else "")] for row in facts["rows"]]
    majority = f" The majority class scores {_pct(facts['majority'])}%." if facts["majority"] is not None else ""
    return document.join(
        "## Downstream: what the models can do after pretraining",
        f"Task **{task['name']}**: {task['description'].rstrip('.')} ({len(task['labels'])} classes; {sizes}"
        f"{'; ' + '; '.join(task['notes']) if task.get('notes') else ''}). Each run's final "
        f"model is exported to its transformers class and loaded with `AutoModelForSequenceClassification`; "
        f"*fine-tuned*: every weight trained ({r['epochs']} epochs, lr {r['lr']:g}, batch {r['batch_size']}, "
        f"warmup {r['warmup_ratio']:g}, weight decay {r['weight_decay']:g}, at most {r['max_length']} tokens); "
        f"*probe*: a logistic regression on the frozen model's pooled features. *Random init*: the same "
        f"architecture with fresh weights and the same recipe, so the difference is what pretraining bought. "
        f"Cells: {facts['split']} accuracy, median over seeds {facts['seeds']} and [min–max]; the pretrained "
        f"model's probe is a convex fit on fixed features, fitted once.{majority}",
        headline(facts),
        document.table(headers, rows),
        picture("downstream", facts["plot"]),
        "**Pretraining against its random-init baseline** (a difference counts when the medians differ by more "
        "than twice the spread, the larger of the two min–max ranges):",
        document.bullets(facts["verdicts"]),
        "**Objectives against each other** (fine-tuned, pretrained):" if facts["pairs"] else "",
        document.bullets(facts["pairs"]) if facts["pairs"] else "")
