"""Corpus loading: local files (globs), a Hub dataset or the built-in corpus, as `datasets` of documents.

    load_corpus(data_cfg) -> (train_texts, validation_texts)

Both are `datasets.Dataset` objects with one string column "text", one document per row, empty documents dropped
(`datasets.IterableDataset` when data_cfg.streaming). Each entry of `data.files` is one source: a file, a
directory or a glob of .txt / .jsonl / .json / .parquet / .csv files (optionally .gz / .bz2 / .xz / .zst), or
"builtin" for the built-in corpus; `data.hub_dataset` adds one more source. With no source at all the built-in
corpus (pretrain/data/builtin.py) is used, so the default demo runs offline. `data.weights` mixes the sources'
training documents with those sampling probabilities (datasets.interleave_datasets, "all_exhausted": a small
source with a large weight is repeated, nothing is dropped).

The validation split is made per source at document level (a seeded random `validation_fraction` of the
documents, at least one) before any mixing, or is `data.validation_files`; a validation document is therefore
never part of a training block. In streaming mode document i goes to validation when a hash of (seed, i) falls
below the fraction, so no pass over the data is needed.

Bad input is caught before `datasets` sees it (missing path, glob matching nothing, binary or non-UTF-8 bytes,
a jsonl line that is not JSON or lacks the text column, ...) and raised as a one-line `UserError` naming the file
(and line) and the fix; a failure inside `datasets` triggers a full scan of the files to find the culprit.
"""
from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import datasets
import numpy as np
import pyarrow.parquet as pq

from ..errors import UserError
from .builtin import builtin_corpus_texts
from .mapped_pages import corpus_files, note_read, release

FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json",
           ".parquet": "parquet", ".csv": "csv"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
BUILTIN = "builtin"
SNIFF_BYTES = 1 << 16
SNIFF_JSON_LINES = 100


@dataclass
class DataConfig:
    """Where the text comes from and how it is split; every field works as a dotted CLI override."""
    files: list[str] = field(default_factory=list)  # files, dirs, globs or "builtin"; empty: the built-in corpus
    hub_dataset: Optional[str] = None  # a Hub dataset id, e.g. "wikitext" (needs the network or a cached copy)
    hub_config: Optional[str] = None  # e.g. "wikitext-2-raw-v1"
    hub_split: str = "train"
    text_column: str = "text"  # the column of .jsonl / .json / .parquet / .csv files and Hub datasets
    txt_split: Literal["paragraph", "line"] = "paragraph"  # one document per blank-line paragraph, or per line
    weights: Optional[list[float]] = None  # sampling weight of each source (files entries, then hub_dataset)
    streaming: bool = False  # read lazily, for corpora larger than disk or memory
    validation_fraction: float = 0.05  # of each source's documents, held out (ignored with validation_files)
    validation_files: list[str] = field(default_factory=list)
    tail: Literal["drop", "pad"] = "drop"  # the last partial block of the token stream
    num_proc: Optional[int] = None  # tokenizing worker processes (None: one per core); also datasets.map's
    seed: int = 0


# ---- finding and checking files ------------------------------------------------------------------------------
def file_format(path: str) -> str | None:
    p = path.lower()
    for c in COMPRESSED:
        if p.endswith(c):
            p = p[: -len(c)]
    return FORMATS.get(os.path.splitext(p)[1])


def expand(entry: str, what: str = "data.files") -> list[str]:
    """The sorted files one `files` entry names; a UserError when it names none."""
    if any(c in entry for c in "*?["):
        found = sorted(f for f in glob.glob(os.path.expanduser(entry), recursive=True) if os.path.isfile(f))
        if not found:
            raise UserError(f"{what}: '{entry}' matches no file; check the pattern and quote it so the shell "
                            f"does not expand it")
    else:
        path = Path(entry).expanduser()
        if not path.exists():
            raise UserError(f"{what}: {entry} does not exist; check the path (or leave {what} empty for the "
                            f"built-in corpus)")
        found = [str(path)] if path.is_file() else sorted(str(p) for p in path.rglob("*")
                                                          if p.is_file() and file_format(p.name))
        if not found:
            raise UserError(f"{what}: directory {entry} holds no .txt/.jsonl/.json/.parquet/.csv file; "
                            f"point it at the files")
    for f in found:
        if file_format(f) is None:
            raise UserError(f"{what}: {f} has an unsupported extension; use .txt, .jsonl, .json, .parquet or "
                            f".csv (optionally compressed: {', '.join(COMPRESSED)})")
    return found


def _bad_utf8(data: bytes, final: bool) -> int | None:
    """Byte offset of the first invalid UTF-8 sequence, or None."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError as e:
        return e.start
    return None


def _encoding_error(path: str, data: bytes, offset: int = 0, final: bool = True) -> UserError | None:
    if b"\0" in data:
        return UserError(f"{path} looks binary (it contains NUL bytes), not text; remove it from data.files or "
                         f"convert it to UTF-8 text")
    bad = _bad_utf8(data, final)
    if bad is None:
        return None
    line = data.count(b"\n", 0, bad) + 1 + offset
    return UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[bad]:02x}); convert the file to UTF-8, e.g. "
                     f"iconv -f latin1 -t utf-8")


def _json_line_error(path: str, lineno: int, line: str, column: str) -> UserError | None:
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove that line")
    if not isinstance(row, dict) or not isinstance(row.get(column), str):
        fields = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        return UserError(f"{path}:{lineno}: no string field '{column}' (found: {fields}); set data.text_column "
                         f"to the text's field or fix that line")
    return None


def check_file(path: str, column: str, full: bool = False):
    """Cheap checks on the first 64 KB (all of the file when `full`), raising a UserError that names the file."""
    fmt = file_format(path)
    if path.lower().endswith(COMPRESSED):
        return  # datasets decompresses; its errors are diagnosed after the fact
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        if fmt == "parquet":
            return _check_parquet(path, head, column)
        data = head + f.read() if full else head
    if not head:  # a 0-byte file, which datasets cannot even read (whitespace-only ones: "holds no text" later)
        raise UserError(f"{path} is empty (0 bytes); put text in it or remove it from data.files")
    err = _encoding_error(path, data, final=full or len(head) < SNIFF_BYTES)
    if err:
        raise err
    if fmt == "csv":
        header = next(csv.reader([data.decode("utf-8", "replace").split("\n", 1)[0]]), [])
        if column not in header:
            raise UserError(f"{path}: no column '{column}' in the CSV header ({', '.join(header)}); set "
                            f"data.text_column to the text's column")
    if fmt == "json" and ".jsonl" in path.lower():
        lines = data.decode("utf-8", "replace").split("\n")
        if not full and len(head) == SNIFF_BYTES:
            lines = lines[:-1]  # the last one may be cut
        for i, line in enumerate(lines if full else lines[:SNIFF_JSON_LINES], 1):
            err = _json_line_error(path, i, line, column)
            if err:
                raise err


def _check_parquet(path: str, head: bytes, column: str):
    if not head.startswith(b"PAR1"):
        raise UserError(f"{path} is not a Parquet file (no PAR1 header); fix the file or its extension")
    names = pq.read_schema(path).names
    if column not in names:
        raise UserError(f"{path}: no column '{column}' (columns: {', '.join(names)}); set data.text_column to "
                        f"the text's column")


def diagnose(files: list[str], column: str) -> UserError | None:
    """After a failure inside `datasets`: scan the files in full for the first problem we can name."""
    for f in files:
        try:
            check_file(f, column, full=True)
        except UserError as e:
            return e
    return None


# ---- loading --------------------------------------------------------------------------------------------------
ROWS_PER_RECORD_BATCH = 10_000  # the Arrow files' record batches: see _finish


def _clean(batch, column: str, source_files: tuple = ()):
    """Strip documents and drop the empty ones (a batched map may return fewer rows). The pages of the source's
    Arrow files read so far are given back as the pass goes (mapped_pages): memory does not grow with the corpus."""
    texts = (t.strip() for t in batch[column] if t)
    if source_files:
        note_read(source_files, len(batch[column]))
    return {"text": [t for t in texts if t]}


def _finish(ds, column: str, where: str, num_proc=None, streaming=False):
    """One "text" column of stripped, non-empty strings, in one pass (the map writes the string type itself).
    Written in Arrow record batches of 10,000 rows, not datasets' 1,000: opening a memory-mapped Arrow file reads
    every batch's header, and the kernel maps the pages around each one, so small batches leave ~40% of a corpus's
    pages in the process's memory at every run."""
    names = ds.column_names
    if names is not None and column not in names:
        raise UserError(f"{where}: no column '{column}' (columns: {', '.join(names)}); set data.text_column to "
                        f"the text's column")
    features = getattr(ds, "features", None)
    if features is not None and column in features and getattr(features[column], "dtype", "string") not in \
            ("string", "large_string"):
        raise UserError(f"{where}: column '{column}' holds {features[column]}, not text; set data.text_column "
                        f"to the text's column")
    if names is None:  # a stream whose columns are unknown until read
        ds, names = ds.select_columns([column]), [column]
    if streaming:
        return ds.map(_clean, batched=True, batch_size=ROWS_PER_RECORD_BATCH, fn_kwargs={"column": column},
                      remove_columns=names)
    source_files = tuple(sorted(corpus_files(ds)))
    out = ds.map(_clean, batched=True, batch_size=ROWS_PER_RECORD_BATCH, remove_columns=names,
                 fn_kwargs={"column": column, "source_files": source_files}, num_proc=num_proc,
                 desc="cleaning documents", writer_batch_size=ROWS_PER_RECORD_BATCH,
                 features=datasets.Features({"text": datasets.Value("string")}))
    release(set(source_files))
    return out


def _load_files(files: list[str], cfg: DataConfig, streaming: bool, what: str):
    for f in files:
        check_file(f, cfg.text_column)
    parts = []
    for fmt in sorted({file_format(f) for f in files}):
        group = [f for f in files if file_format(f) == fmt]
        kwargs = {"sample_by": cfg.txt_split} if fmt == "text" else {}
        if not streaming:
            kwargs["writer_batch_size"] = ROWS_PER_RECORD_BATCH
        column = "text" if fmt == "text" else cfg.text_column
        try:
            with _silent_datasets_log():  # its own error lines would come before ours
                ds = datasets.load_dataset(fmt, data_files=group, split="train", streaming=streaming, **kwargs)
            if not streaming and fmt == "json" and column in ds.column_names \
                    and ds.data.column(column).null_count:
                raise ValueError(f"some rows have no string '{column}'")
        except Exception as e:  # datasets wraps everything; name the file and line ourselves when we can
            found = diagnose(group, cfg.text_column)
            raise (found or UserError(f"{what}: cannot read {group[0]}{' (and others)' if len(group) > 1 else ''}:"
                                      f" {str(e).splitlines()[0]}; check the file's format")) from None
        parts.append(_finish(ds, column, group[0] if len(group) == 1 else what, cfg.num_proc, streaming))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


@contextmanager
def _silent_datasets_log():
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL + 10)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)


def _load_builtin(streaming: bool):
    ds = datasets.Dataset.from_dict({"text": builtin_corpus_texts()})
    return ds.to_iterable_dataset() if streaming else ds


def _load_hub(cfg: DataConfig):
    name = f"'{cfg.hub_dataset}'" + (f" (config {cfg.hub_config})" if cfg.hub_config else "")
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE") or \
        os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    try:
        ds = datasets.load_dataset(cfg.hub_dataset, cfg.hub_config, split=cfg.hub_split, streaming=cfg.streaming)
    except Exception as e:
        hint = "HF_HUB_OFFLINE is set and no cached copy was found: run once online, or use data.files" if \
            offline else "check the id, config and split on the Hub and your network, or use data.files"
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"data.hub_dataset {name}: cannot load it ({first}); {hint}") from None
    return _finish(ds, cfg.text_column, f"data.hub_dataset {name}", cfg.num_proc, cfg.streaming)


def load_sources(cfg: DataConfig) -> list[tuple[str, object]]:
    """(description, dataset of documents) per source, in config order."""
    entries = list(cfg.files) or ([] if cfg.hub_dataset else [BUILTIN])
    sources = []
    for entry in entries:
        if entry == BUILTIN:
            sources.append((BUILTIN, _load_builtin(cfg.streaming)))
        else:
            sources.append((entry, _load_files(expand(entry), cfg, cfg.streaming, f"data.files '{entry}'")))
    if cfg.hub_dataset:
        sources.append((cfg.hub_dataset, _load_hub(cfg)))
    return sources


# ---- validation split and mixing ------------------------------------------------------------------------------
SPLIT_BATCH = 100_000  # documents per call of the split's mask function


def held_out_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """Which of n documents the validation split holds: the first round(fraction * n) (at least one, never all) of
    a seeded permutation (int32 where it fits: the same order as Generator.permutation, half the memory)."""
    n_val = min(n - 1, max(1, round(fraction * n))) if fraction > 0 else 0
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    np.random.default_rng(seed).shuffle(order)
    is_val = np.zeros(n, dtype=bool)
    is_val[order[:n_val]] = True
    return is_val


def _keep(indices, mask, keep_value: bool):
    return mask[indices] == keep_value


def split_documents(ds, fraction: float, seed: int):
    """(train, validation) at document level: a seeded random `fraction` of the rows (at least one). A vectorized
    filter on the row index alone, with a fingerprint made of the source's and the split's settings: no text is
    read, no per-row Python objects are made (select() would list every index), memory stays flat, and a file
    corpus finds both splits in the datasets cache from the second run on."""
    n = len(ds)
    is_val = held_out_mask(n, fraction, seed)
    if not is_val.any():
        return ds, ds.select([])
    key = f"{ds._fingerprint}:{n}:{fraction!r}:{seed}"

    def side(keep_value: bool, name: str):
        fingerprint = hashlib.sha256(f"{key}:{name}".encode()).hexdigest()[:16]
        return ds.filter(_keep, fn_kwargs={"mask": is_val, "keep_value": keep_value}, input_columns=[],
                         with_indices=True, batched=True, batch_size=SPLIT_BATCH, new_fingerprint=fingerprint,
                         desc=f"{name} split")

    return side(False, "training"), side(True, "validation")


def _hash_unit(seed: int, i: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0 ** 64


def _in_val(_, i, seed, fraction):
    return _hash_unit(seed, i) < fraction


def _in_train(_, i, seed, fraction):
    return _hash_unit(seed, i) >= fraction


def split_stream(ds, fraction: float, seed: int):
    """Streaming counterpart of split_documents: document i is held out when hash(seed, i) < fraction."""
    kw = {"seed": seed, "fraction": fraction}
    return (ds.filter(_in_train, with_indices=True, fn_kwargs=kw),
            ds.filter(_in_val, with_indices=True, fn_kwargs=kw))


def mix(parts: list, weights: Optional[list[float]], seed: int):
    if len(parts) == 1:
        return parts[0]
    if weights is None:
        return datasets.concatenate_datasets(parts)
    total = float(sum(weights))
    return datasets.interleave_datasets(parts, probabilities=[w / total for w in weights], seed=seed,
                                        stopping_strategy="all_exhausted")


def check_config(cfg: DataConfig):
    if not 0 <= cfg.validation_fraction < 1:
        raise UserError(f"data.validation_fraction {cfg.validation_fraction} must be in [0, 1); e.g. 0.05")
    n_sources = max(1, len(cfg.files) + bool(cfg.hub_dataset))
    if cfg.weights is not None:
        if len(cfg.weights) != n_sources:
            raise UserError(f"data.weights has {len(cfg.weights)} values for {n_sources} sources (data.files "
                            f"entries, then data.hub_dataset); give one weight per source")
        if any(w < 0 for w in cfg.weights) or sum(cfg.weights) <= 0:
            raise UserError(f"data.weights {cfg.weights} must be non-negative with a positive sum")


def load_corpus(cfg: DataConfig):
    """(train_texts, validation_texts): datasets with one "text" column; see the module docstring."""
    check_config(cfg)
    sources = load_sources(cfg)
    if not cfg.streaming:
        for name, ds in sources:
            if len(ds) == 0:
                raise UserError(f"data source '{name}' holds no text (every document is empty); give files "
                                f"with text")
    if cfg.validation_files:
        val_cfg = DataConfig(**{**cfg.__dict__, "files": list(cfg.validation_files), "hub_dataset": None,
                                "weights": None})
        val_parts = [_load_files(expand(e, "data.validation_files"), val_cfg, cfg.streaming,
                                 f"data.validation_files '{e}'") for e in cfg.validation_files]
        train_parts = [ds for _, ds in sources]
    else:
        split = split_stream if cfg.streaming else split_documents
        pairs = [split(ds, cfg.validation_fraction, cfg.seed + i) for i, (_, ds) in enumerate(sources)]
        train_parts, val_parts = [p[0] for p in pairs], [p[1] for p in pairs]
    train = mix(train_parts, cfg.weights, cfg.seed)
    val = mix(val_parts, None, cfg.seed)
    release(corpus_files(train) | corpus_files(val))  # what making the splits read: not needed again
    return train, val


@contextmanager
def quiet_datasets():
    """No `datasets` progress bars ("Generating train split", "Casting the dataset", "Saving the dataset") while
    the corpus is read and packed: the caller prints one line per phase of its own."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def count_documents(texts) -> str:
    return f"{len(texts):,}" if hasattr(texts, "__len__") else "streamed"


def describe_corpus(cfg: DataConfig) -> str:
    """One line naming where the text came from and how validation was held out (logs, reports, model cards)."""
    files = [f for f in cfg.files if f != BUILTIN]
    parts = []
    if files:
        shown = ", ".join(f"`{Path(str(f)).name}`" for f in files[:5])
        parts.append(f"local files {shown}" + (f" and {len(files) - 5} more" if len(files) > 5 else ""))
    if cfg.hub_dataset:
        extra = "/".join(str(v) for v in (cfg.hub_config, cfg.hub_split) if v)
        parts.append(f"Hub dataset `{cfg.hub_dataset}`" + (f" ({extra})" if extra else ""))
    if BUILTIN in cfg.files or not parts:
        parts.insert(0, "the built-in offline corpus (the CPython documentation and standard-library docstrings)")
    if cfg.validation_files:
        parts.append(f"validation on {len(cfg.validation_files)} separate file(s)")
    else:
        parts.append(f"{cfg.validation_fraction:.0%} of the documents held out for validation")
    return "; ".join(parts)
