"""Probe and fine-tune one model on one task over several seeds, beside its random-init baseline.

    results = evaluate(backbone, task, modes=("probe", "finetune"), seeds=(0, 1, 2), baseline=True,
                       encoder_pooling=False)   # True: encoder-decoders also read through their encoder
    summary_lines(results) -> [str]     the table `pretrain finetune` prints and the model card quotes

results (what finetune/<task>/results.json holds): the task (name, labels, sizes, notes), the model, the recipes,
the seeds, the majority-class accuracy, and per mode and init ("pretrained", "random_init") every seed's scores
and their spread (median, min, max) on the validation and test splits. With encoder_pooling, an encoder-decoder
also has the modes "probe_encoder" and "finetune_encoder": the same protocol on its encoder's mean-pooled states
(pretrain/evaluate/encoder_pooled.py) beside transformers' decoder-pooled classifier.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter

from tqdm import tqdm

from .classifier import Backbone
from .finetune import fine_tune, probe
from .recipe import FinetuneRecipe, ProbeRecipe
from .scores import spread

MODES = ("probe", "finetune")
ENCODER_MODES = {"probe": "probe_encoder", "finetune": "finetune_encoder"}  # mode -> its encoder-pooled twin
ALL_MODES = MODES + tuple(ENCODER_MODES.values())
INITS = ("pretrained", "random_init")


def majority(task) -> dict:
    """Accuracy of always answering the training split's most frequent class."""
    top = Counter(task.splits["train"]["label"]).most_common(1)[0][0]
    return {split: sum(y == top for y in part["label"]) / max(1, len(part["label"]))
            for split, part in task.splits.items() if split != "train"}


def _summarize(per_seed: list[dict]) -> dict:
    return {split: spread([r[split] for r in per_seed]) for split in ("validation", "test") if split in per_seed[0]}


def evaluate(backbone: Backbone, task, modes=MODES, seeds=(0, 1, 2), baseline: bool = True,
             recipe: FinetuneRecipe | None = None, probe_recipe: ProbeRecipe | None = None, progress: bool = True,
             log=print, encoder_pooling: bool = False) -> dict:
    recipe, probe_recipe = recipe or FinetuneRecipe(), probe_recipe or ProbeRecipe()
    inits = INITS if baseline else INITS[:1]
    steps = recipe.epochs * math.ceil(task.size("train") / recipe.batch_size)
    poolings = {m: "native" for m in MODES if m in modes}
    if encoder_pooling and backbone.arch == "encoder-decoder":
        poolings.update({ENCODER_MODES[m]: "encoder" for m in MODES if m in modes})
    n_finetunes = len(seeds) * len(inits) * sum(m.startswith("finetune") for m in poolings)
    bar = tqdm(total=steps * n_finetunes, desc=f"fine-tuning on {task.name}", unit="step", disable=not progress,
               dynamic_ncols=True, leave=False)
    out = {"task": {"name": task.name, "description": task.description, "labels": task.labels,
                    "sizes": {s: task.size(s) for s in task.splits}, "notes": task.notes},
           "model": {"source": str(backbone.source), "description": backbone.description,
                     "model_type": backbone.model_type, "arch": backbone.arch},
           "recipes": {"finetune": dataclasses.asdict(recipe), "probe": dataclasses.asdict(probe_recipe)},
           "seeds": list(seeds), "majority": majority(task)}
    try:
        for mode, pooling in poolings.items():
            out[mode] = {}
            for init in inits:
                pretrained = init == "pretrained"
                per_seed = []
                # the pretrained probe is a convex fit on fixed features: one seed says it all
                probing = mode.startswith("probe")
                for seed in (seeds[:1] if probing and pretrained else seeds):
                    kwargs = {"pooling": pooling} if pooling != "native" else {}
                    if probing:
                        result = probe(backbone, task, probe_recipe, pretrained, seed, **kwargs)
                    else:
                        result = fine_tune(backbone, task, recipe, pretrained, seed, progress=bar, **kwargs)
                    per_seed.append({"seed": seed, **result})
                    log(f"  {mode:16s} {init:11s} seed {seed}: " + ", ".join(
                        f"{split} accuracy {result[split]['accuracy']:.3f}" for split in ("validation", "test")
                        if split in result) + f" ({result['seconds']:.0f}s)")
                out[mode][init] = {"per_seed": per_seed, "spread": _summarize(per_seed)}
    finally:
        bar.close()
    return out


def _cell(summary: dict, split: str, metric: str = "accuracy") -> str:
    s = summary.get(split, {}).get(metric)
    if s is None:
        return "n/a"
    if s["min"] == s["max"]:
        return f"{s['median']:.3f}"
    return f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"


def headline_split(results: dict) -> str:
    """test when the task has labelled test examples, else validation."""
    return "test" if "test" in results["task"]["sizes"] else "validation"


def summary_lines(results: dict) -> list[str]:
    """One line per mode and init: accuracy and macro-F1 (median [min, max] over seeds)."""
    lines = []
    for mode in ALL_MODES:
        for init, block in results.get(mode, {}).items():
            spread_ = block["spread"]
            parts = [f"{split} accuracy {_cell(spread_, split)}, macro-F1 {_cell(spread_, split, 'macro_f1')}"
                     + (f", MCC {_cell(spread_, split, 'mcc')}" if "mcc" in spread_.get(split, {}) else "")
                     for split in ("validation", "test") if split in spread_]
            n = len(block["per_seed"])
            lines.append(f"{mode:{16 if mode in ENCODER_MODES.values() else 8}s} {init:11s} ({n} seed{'s' * (n > 1)}): "
                         + "; ".join(parts))
    maj = results["majority"]
    lines.append("majority class: " + ", ".join(f"{split} accuracy {v:.3f}" for split, v in maj.items()))
    return lines
