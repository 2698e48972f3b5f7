"""Labelled sequence-classification tasks for fine-tuning and probing: local files, a Hub dataset, the built-in task.

    load_task(TaskSpec(task="stdlib-area")) -> Task
    load_task(TaskSpec(task="data/train.csv", validation="data/dev.csv", label_column="y")) -> Task
    load_task(TaskSpec(task="hub:nyu-mll/glue:sst2")) -> Task          (online only)

A task is read and checked whole before anything is fine-tuned or written: every bad input is one UserError naming
the file (and row) and the fix. Labels may be strings or integers; they become class ids 0..K-1 in sorted order.
Without validation / test files the one file is split at document (row) level by a seeded permutation (only the
missing splits are cut out of it: a test file given alone leaves the test share of the rows in train); a Hub test
split whose labels are hidden (GLUE's are -1) is left out and said so.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..data.builtin_task import BUILTIN_TASK, BUILTIN_TASK_DESCRIPTION, builtin_task_splits
from ..errors import UserError

TASK_FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")
# (text, second text) columns tried in this order when none is given: GLUE's and the common plain names
KNOWN_COLUMNS = [("text", None), ("sentence", None), ("premise", "hypothesis"), ("question", "sentence"),
                 ("question1", "question2"), ("sentence1", "sentence2"), ("text_a", "text_b")]


@dataclass
class TaskSpec:
    """Where a task's examples come from and which columns hold what."""
    task: str = BUILTIN_TASK  # the built-in task, a local train file, or hub:DATASET[:CONFIG]
    validation: Optional[str] = None  # local validation file
    test: Optional[str] = None  # local test file
    text_column: Optional[str] = None  # default: text / sentence / ... (see KNOWN_COLUMNS)
    text_pair_column: Optional[str] = None  # a second text (pairs: NLI, paraphrase)
    label_column: str = "label"
    split_fractions: tuple[float, float] = (0.1, 0.1)  # validation, test fractions of one file without the others
    split_seed: int = 0
    max_train: Optional[int] = None  # keep a seeded sample of this many training examples


@dataclass
class Task:
    name: str
    description: str
    labels: list  # class id -> label (strings or integers, as the data had them)
    splits: dict = field(default_factory=dict)  # split -> {"text": [...], "text_pair": [...] | None, "label": [ids]}
    notes: list = field(default_factory=list)  # what the reader should know (a split left out, a sample taken)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def size(self, split: str) -> int:
        return len(self.splits[split]["label"]) if split in self.splits else 0


def task_name(spec: TaskSpec) -> str:
    """A short name for the output folder: the built-in name, the train file's stem, or the Hub dataset/config."""
    if spec.task == BUILTIN_TASK:
        return BUILTIN_TASK
    if spec.task.startswith("hub:"):
        return spec.task[4:].replace("/", "_").replace(":", "-")
    stem = Path(spec.task).name
    for suffix in TASK_FORMATS:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem or "task"


# ---- reading ---------------------------------------------------------------------------------------------------
def _read_file(path: str, what: str) -> list[dict]:
    p = Path(path)
    fmt = TASK_FORMATS.get(p.suffix.lower())
    if not p.is_file():
        raise UserError(f"{what} {path} does not exist; give a .csv, .jsonl or .parquet file (or --task "
                        f"{BUILTIN_TASK} for the built-in task)")
    if fmt is None:
        raise UserError(f"{what} {path} has an unsupported extension; use .csv, .jsonl or .parquet")
    import datasets

    from ..data.corpus import quiet_datasets

    try:
        with quiet_datasets():
            ds = datasets.load_dataset(fmt, data_files=str(p), split="train", keep_in_memory=True)
    except Exception as e:
        raise UserError(f"cannot read {what} {path} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); check "
                        f"that it is valid {fmt}") from None
    return ds.to_list()


def _hub_rows(spec: TaskSpec) -> dict[str, list[dict]]:
    ref = spec.task[4:]
    name, _, config = ref.partition(":")
    if not name:
        raise UserError("--task hub: needs a dataset, e.g. hub:nyu-mll/glue:sst2")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise UserError(f"--task {spec.task} needs the Hugging Face Hub but HF_HUB_OFFLINE=1; go online or use local "
                        f"files (--task train.csv) or the built-in task (--task {BUILTIN_TASK})")
    import datasets

    try:
        dd = datasets.load_dataset(name, config or None)
    except Exception as e:
        raise UserError(f"cannot load Hub dataset {ref} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                        f"check the name and config (e.g. hub:nyu-mll/glue:sst2)") from None
    out = {}
    for split in SPLITS:  # GLUE's MNLI names its splits validation_matched / test_matched
        found = split if split in dd else next((s for s in dd if s.startswith(f"{split}_")), None)
        if found is not None:
            out[split] = dd[found].to_list()
    if "train" not in out:
        raise UserError(f"Hub dataset {ref} has no train split (it has {', '.join(dd)}); choose another")
    return out


def _columns(spec: TaskSpec, rows: list[dict], where: str) -> tuple[str, Optional[str]]:
    have = set(rows[0]) if rows else set()
    if spec.label_column not in have:
        raise UserError(f"{where} has no label column {spec.label_column!r} (columns: {', '.join(sorted(have))}); "
                        f"name it with --label-column")
    text, pair = spec.text_column, spec.text_pair_column
    if text is None:
        text, guessed = next(((t, p) for t, p in KNOWN_COLUMNS if t in have and (p is None or p in have)),
                             (None, None))
        if text is None:
            raise UserError(f"{where} has no text column (columns: {', '.join(sorted(have))}); name it with "
                            f"--text-column")
        pair = pair if spec.text_column or pair else guessed
    for column, flag in ((text, "--text-column"), (pair, "--text-pair-column")):
        if column is not None and column not in have:
            raise UserError(f"{where} has no column {column!r} (given by {flag}; columns: "
                            f"{', '.join(sorted(have))})")
    return text, pair


def _check_label(value, row: int, where: str, column: str):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{where} row {row}: label column {column!r} holds {value!r} ({type(value).__name__}); "
                        f"labels must be strings or integers")


def _clean_split(rows: list[dict], text: str, pair: Optional[str], label: str, where: str) -> dict:
    texts, pairs, labels = [], [] if pair else None, []
    hidden = 0
    for i, row in enumerate(rows, 1):
        value = row.get(label)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            hidden += 1  # GLUE's hidden test labels are -1
            continue
        _check_label(value, i, where, label)
        for column in (text, pair):
            if column is not None and not isinstance(row.get(column), str):
                raise UserError(f"{where} row {i}: column {column!r} holds {row.get(column)!r}, not text; fix or "
                                f"drop that row")
        texts.append(row[text])
        if pair:
            pairs.append(row[pair])
        labels.append(value)
    return {"text": texts, "text_pair": pairs, "label": labels, "hidden": hidden}


def _split_one(rows: list[dict], fractions, seed: int, where: str, label: str,
               missing=("validation", "test")) -> dict[str, list[dict]]:
    """A seeded split stratified by label: each class keeps its share in every split, train first. Only the
    `missing` splits are cut out of the rows: a split given as its own file leaves its share in train."""
    val_f, test_f = fractions
    if not (0 < val_f < 1 and 0 < test_f < 1 and val_f + test_f < 1):
        raise UserError(f"--split {val_f},{test_f}: the validation and test fractions must be in (0, 1) with a sum "
                        f"below 1, e.g. 0.1,0.1")
    val_f, test_f = (val_f if "validation" in missing else 0.0), (test_f if "test" in missing else 0.0)
    by_class: dict = {}
    for i, row in enumerate(rows):
        if label in row:
            _check_label(row[label], i + 1, where, label)
        by_class.setdefault(row.get(label), []).append(i)
    rng = random.Random(seed)
    parts = {"train": [], "validation": [], "test": []}
    for key in sorted(by_class, key=repr):
        idx = by_class[key]
        rng.shuffle(idx)
        n_val = round(val_f * len(idx)) if len(idx) >= 3 else 0
        n_test = round(test_f * len(idx)) if len(idx) >= 3 else 0
        parts["validation"] += idx[:n_val]
        parts["test"] += idx[n_val:n_val + n_test]
        parts["train"] += idx[n_val + n_test:]
    if any(not parts[split] for split in missing):
        raise UserError(f"{where} has {len(rows)} examples, too few to split into train / validation / test; give "
                        f"more examples or separate --validation / --test files")
    return {split: [rows[i] for i in sorted(idx)] for split, idx in parts.items()}


def _raw_splits(spec: TaskSpec) -> tuple[dict, dict, str, str, list]:
    """(rows per split, where each came from, name, description, notes)."""
    notes = []
    if spec.task == BUILTIN_TASK:
        return builtin_task_splits(), {s: f"the built-in task ({s})" for s in SPLITS}, BUILTIN_TASK, \
            BUILTIN_TASK_DESCRIPTION, notes
    if spec.task.startswith("hub:"):
        rows = _hub_rows(spec)
        return rows, {s: f"{spec.task} ({s})" for s in rows}, task_name(spec), f"Hub dataset {spec.task[4:]}", notes
    rows = {"train": _read_file(spec.task, "task file")}
    where = {"train": spec.task}
    for split in ("validation", "test"):
        path = getattr(spec, split)
        if path:
            rows[split], where[split] = _read_file(path, f"--{split} file"), path
    if "validation" not in rows or "test" not in rows:
        missing = [s for s in ("validation", "test") if s not in rows]
        if not rows["train"]:
            raise UserError(f"task file {spec.task} holds no examples; give a file with rows")
        _columns(spec, rows["train"], spec.task)  # the columns first: a missing one is the clearer message
        pieces = _split_one(rows["train"], spec.split_fractions, spec.split_seed, spec.task, spec.label_column,
                            missing)
        rows["train"] = pieces["train"]
        for split in missing:
            rows[split], where[split] = pieces[split], f"{spec.task} (seeded split)"
        fractions = " / ".join(f"{split} {spec.split_fractions[('validation', 'test').index(split)]:g}"
                               for split in missing)
        notes.append(f"{' and '.join(missing)} held out of {Path(spec.task).name} by a seeded split stratified by "
                     f"label (seed {spec.split_seed}, fraction{'s' * (len(missing) > 1)} {fractions}; the rest "
                     f"trains)")
    return rows, where, task_name(spec), f"local files ({Path(spec.task).name})", notes


def load_task(spec: TaskSpec) -> Task:
    """The task's splits as texts and class ids, checked; see the module docstring."""
    rows, where, name, description, notes = _raw_splits(spec)
    if not rows.get("train"):
        raise UserError(f"{where.get('train', spec.task)} holds no examples; give a file with rows")
    text, pair = _columns(spec, rows["train"], where["train"])
    splits = {}
    for split in SPLITS:
        if split not in rows:
            continue
        if rows[split]:
            _columns(TaskSpec(**{**spec.__dict__, "text_column": text, "text_pair_column": pair}), rows[split],
                     where[split])
        part = _clean_split(rows[split], text, pair, spec.label_column, where[split])
        if part["hidden"] and not part["label"]:
            notes.append(f"the {split} split's labels are hidden ({part['hidden']} rows labelled -1): left out")
            continue
        splits[split] = part
    train_labels = splits["train"]["label"]
    kinds = {type(v) for part in splits.values() for v in part["label"]}
    if len(kinds) > 1:
        raise UserError(f"the label column {spec.label_column!r} mixes strings and integers across the splits; use "
                        f"one kind")
    labels = sorted(set(train_labels))
    if len(labels) < 2:
        raise UserError(f"{where['train']} has only one class ({labels[0]!r}) in column {spec.label_column!r}; a "
                        f"classification task needs at least two" if labels else
                        f"{where['train']} holds no labelled examples")
    index = {label: i for i, label in enumerate(labels)}
    for split, part in splits.items():
        unknown = sorted({v for v in part["label"] if v not in index}, key=str)
        if unknown:
            raise UserError(f"{where[split]} has label(s) {', '.join(map(repr, unknown[:3]))} that the training "
                            f"split lacks; a class never seen in training cannot be learned")
        part["label"] = [index[v] for v in part["label"]]
        part.pop("hidden")
        if not part["label"] and split != "train":
            raise UserError(f"{where[split]} holds no examples; give a {split} file with rows")
    if spec.max_train is not None and spec.max_train < len(splits["train"]["label"]):
        keep = sorted(random.Random(spec.split_seed).sample(range(len(train_labels)), spec.max_train))
        part = splits["train"]
        splits["train"] = {k: ([v[i] for i in keep] if v is not None else None) for k, v in part.items()}
        notes.append(f"training on a seeded sample of {spec.max_train} of {len(train_labels)} examples")
    return Task(name, description, labels, splits, notes)
