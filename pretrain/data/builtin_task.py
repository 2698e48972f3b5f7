"""The built-in downstream task: classify a short standard-library docstring by the library area it documents.

Fine-tuning and probing a pretrained model needs labelled text, and the default demo runs offline, so the task is
made from text every Python installation has, like the built-in pretraining corpus (builtin.py). Each example is
one docstring of the standard library that the pretraining corpus leaves out: shorter than MIN_DOCSTRING_CHARS
(200) raw, at least MIN_TEXT_WORDS words and MIN_TEXT_CHARS characters once whitespace is collapsed, and not equal
to any (whitespace-collapsed) corpus document. So no example of any split was seen in pretraining. The label is the
area of the top-level module or package the docstring's file belongs to, from the hand-written AREAS map (modules
not in the map are dropped): GUI and terminal, concurrency and processes, data types and numbers, development and
language tools, networking and internet, files and operating system, text processing and data formats.

The docstrings are found by builtin.py's own lexer in builtin.py's own file list (so both sides apply the same
length test to the same strings), their whitespace collapsed. Exact duplicate texts are kept once (the first, in
file order); a text found under two areas is dropped. A single file keeps at most MAX_PER_FILE docstrings and an
area at most MAX_PER_AREA (the ones of smallest text hash), so no module (tkinter's widget methods) or area
dominates. The split is by source file, stratified by area: within an area the files, in the order of a SHA-256 of
their path, go one by one to the split furthest below its share (SPLIT_SHARES) of the area, so a module's docstrings
never straddle splits, test modules are unseen in training, and every split has about the same class balance. The
training split is capped at MAX_TRAIN examples (smallest text hash). Nothing depends on Python's hash() or on the
order the files are listed in; rows in a split are ordered by text hash, i.e. shuffled, the labels interleaved.

On CPython 3.11: 3,397 examples in 7 classes, the largest class (dev-tools) at most 24% of each split, the smallest
about 10%:

    split        all   concurrency data-types dev-tools  gui  network os-files  text
    train       2058        259        221       478     302     298     237     263
    validation   435         56         47       102      65      64      47      54
    test         904         98         93       220     140     134      94     125

Other Python versions give other counts (modules come and go; the map lists modules of several versions). The
result is cached as JSON next to the built-in corpus's cache (~/.cache/unified_pretrain), keyed by the corpus's stamp
(Python version, length threshold, lexer, every source file's size and mtime) and this module's parameters, so
later runs read it in milliseconds.

    builtin_task_splits() -> {"train": [...], "validation": [...], "test": [...]}   rows {"text": str, "label": str}
    builtin_task_labels() -> list[str]                                                the area names, sorted
"""
from __future__ import annotations

import functools
import hashlib
import json
import sysconfig
from pathlib import Path

from ..atomic import write_text_atomic
from .builtin import MIN_DOCSTRING_CHARS, _cache_file, _docstrings, builtin_corpus_texts, stdlib_files

BUILTIN_TASK = "stdlib-area"
BUILTIN_TASK_DESCRIPTION = (
    "classify a short Python standard-library docstring (one the built-in pretraining corpus leaves out) by the "
    "area of the library its module belongs to (gui, concurrency, data-types, dev-tools, network, os-files, text); "
    "split by source file, so the test modules are unseen in training")

TASK_VERSION = 1  # bump when the construction changes (it is part of the cache key)
MIN_TEXT_CHARS = 40
MIN_TEXT_WORDS = 6
MAX_PER_FILE = 80
MAX_PER_AREA = 800
MAX_TRAIN = 3000
SPLITS = ("train", "validation", "test")
SPLIT_SHARES = {"train": 0.6, "validation": 0.13, "test": 0.27}

# Top-level module or package -> area. Modules of several Python versions are listed (some come, some go);
# generated or boilerplate modules (encodings: one "Python Character Mapping Codec ..." line per codec) and the
# big one-module services that fit no area (logging) are left out.
AREAS: dict[str, tuple[str, ...]] = {
    "gui": ("tkinter", "idlelib", "turtle", "turtledemo", "curses"),
    "concurrency": ("asyncio", "concurrent", "multiprocessing", "threading", "_threading_local", "queue",
                    "subprocess", "selectors", "sched", "signal", "pty", "asyncore", "asynchat"),
    "data-types": ("collections", "_collections_abc", "enum", "dataclasses", "datetime", "_strptime", "_pydatetime",
                   "zoneinfo", "calendar", "decimal", "_pydecimal", "fractions", "numbers", "statistics", "random",
                   "heapq", "bisect", "weakref", "copy", "copyreg", "pickle", "graphlib", "operator", "functools",
                   "reprlib", "uuid", "struct", "abc", "_py_abc", "types", "contextlib"),
    "dev-tools": ("ast", "dis", "inspect", "typing", "unittest", "doctest", "pdb", "bdb", "importlib", "tokenize",
                  "token", "keyword", "pydoc", "symtable", "lib2to3", "distutils", "ensurepip", "venv", "site",
                  "_sitebuiltins", "sysconfig", "runpy", "modulefinder", "pkgutil", "zipimport", "imp", "py_compile",
                  "compileall", "pyclbr", "tabnanny", "trace", "traceback", "warnings", "timeit", "profile",
                  "cProfile", "pstats", "tracemalloc", "code", "codeop", "pickletools", "opcode", "__future__",
                  "rlcompleter", "_pyrepl"),
    "network": ("http", "urllib", "socket", "ssl", "smtplib", "smtpd", "imaplib", "poplib", "nntplib", "ftplib",
                "telnetlib", "xmlrpc", "socketserver", "wsgiref", "ipaddress", "cgi", "cgitb", "webbrowser",
                "nturl2path"),
    "os-files": ("os", "pathlib", "shutil", "tempfile", "glob", "fnmatch", "zipfile", "tarfile", "gzip", "bz2", "lzma",
                 "_compression", "zipapp", "io", "_pyio", "stat", "ntpath", "posixpath", "genericpath", "platform",
                 "_osx_support", "_aix_support", "filecmp", "fileinput", "linecache", "shelve", "dbm", "getpass",
                 "pipes", "tty"),
    "text": ("re", "sre_compile", "sre_parse", "string", "textwrap", "difflib", "csv", "json", "html", "xml", "email",
             "mailbox", "mailcap", "configparser", "tomllib", "codecs", "base64", "quopri", "uu", "plistlib", "xdrlib",
             "stringprep", "gettext", "locale", "shlex", "netrc", "mimetypes", "_markupbase", "pprint", "wave",
             "chunk", "aifc", "sunau", "sndhdr", "imghdr"),
}
_AREA_OF = {module: area for area, modules in AREAS.items() for module in modules}
assert len(_AREA_OF) == sum(map(len, AREAS.values())), "a module is mapped to two areas"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _examples(files: list[Path]) -> list[tuple[str, str, str]]:
    """(file path relative to the stdlib, area, text) of every usable docstring, in file and source order, duplicates
    kept once and texts found under two areas dropped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    in_corpus = {_collapse(doc) for doc in builtin_corpus_texts()}
    first, areas = {}, {}
    for rel, path in sorted((p.relative_to(root).as_posix(), p) for p in files):
        area = _AREA_OF.get(rel.split("/")[0].removesuffix(".py"))
        if area is None:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for doc in _docstrings(source):
            if len(doc) >= MIN_DOCSTRING_CHARS:  # the pretraining corpus's own test: it has this one
                continue
            text = _collapse(doc)
            if len(text) < MIN_TEXT_CHARS or len(text.split()) < MIN_TEXT_WORDS or text in in_corpus:
                continue
            first.setdefault(text, (rel, area, text))
            areas.setdefault(text, set()).add(area)
    return [example for text, example in first.items() if len(areas[text]) == 1]


def _keep_smallest_hashes(examples: list, limit: int) -> list:
    """At most `limit` of the examples, the ones of smallest text hash, in their original order."""
    if len(examples) <= limit:
        return examples
    kept = set(sorted(range(len(examples)), key=lambda i: _digest(examples[i][2]))[:limit])
    return [e for i, e in enumerate(examples) if i in kept]


def _group(examples: list, key) -> dict:
    groups = {}
    for e in examples:
        groups.setdefault(key(e), []).append(e)
    return groups


def _build(files: list[Path]) -> dict[str, list[dict]]:
    examples = _examples(files)
    examples = [e for group in _group(examples, lambda e: e[0]).values()
                for e in _keep_smallest_hashes(group, MAX_PER_FILE)]
    splits = {split: [] for split in SPLITS}
    for area, group in sorted(_group(examples, lambda e: e[1]).items()):
        group = _keep_smallest_hashes(group, MAX_PER_AREA)
        counts = dict.fromkeys(SPLITS, 0)
        by_file = _group(group, lambda e: e[0])
        for rel in sorted(by_file, key=_digest):  # stratified group split: each file to the split most in deficit
            n = len(by_file[rel])
            total = sum(counts.values()) + n
            split = max(SPLITS, key=lambda s: SPLIT_SHARES[s] * total - counts[s])
            counts[split] += n
            splits[split] += by_file[rel]
    splits["train"] = _keep_smallest_hashes(splits["train"], MAX_TRAIN)
    return {split: [{"text": text, "label": area} for _, area, text in sorted(rows, key=lambda e: _digest(e[2]))]
            for split, rows in splits.items()}


def _task_cache_file(files: list[Path]) -> Path:
    """Next to the built-in corpus's cache, keyed by its stamp and everything that shapes the task."""
    corpus_cache = _cache_file(files)
    stamp = _digest(repr((corpus_cache.name, TASK_VERSION, MIN_TEXT_CHARS, MIN_TEXT_WORDS, MAX_PER_FILE, MAX_PER_AREA,
                          MAX_TRAIN, sorted(SPLIT_SHARES.items()), sorted(AREAS.items()))))
    return corpus_cache.parent / f"builtin-task-{BUILTIN_TASK}-{stamp[:16]}.json"


def _valid(splits) -> bool:
    return (isinstance(splits, dict) and sorted(splits) == sorted(SPLITS)
            and all(isinstance(rows, list) and all(isinstance(r, dict) and isinstance(r.get("text"), str)
                                                   and r.get("label") in AREAS for r in rows)
                    for rows in splits.values()))


@functools.lru_cache(maxsize=1)
def _builtin_task() -> str:
    """The splits as JSON text: built once, then read from the cache."""
    files = stdlib_files()
    cache = _task_cache_file(files)
    try:
        text = cache.read_text(encoding="utf-8")
        if _valid(json.loads(text)):
            return text
    except (OSError, ValueError):
        pass
    text = json.dumps(_build(files))
    try:  # best effort: a read-only home just means building again next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, text)
    except OSError:
        pass
    return text


def builtin_task_splits() -> dict[str, list[dict]]:
    """{"train": [...], "validation": [...], "test": [...]}, rows {"text": str, "label": str}; a fresh copy."""
    return json.loads(_builtin_task())


def builtin_task_labels() -> list[str]:
    """The class labels: the area names, sorted."""
    return sorted(AREAS)
