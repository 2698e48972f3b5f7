"""The built-in corpus: real English text that every Python installation ships, so the default demo runs offline.

It is CPython's documentation topics (`pydoc_data.topics`, ~0.45 MB: the language reference sections `help()`
shows) followed by the standard library's longer docstrings (~1.3 MB), about 1.8 MB in all. The docstrings are
found by a small string-literal lexer rather than `ast.parse`, which takes ~10 s for the 12 MB of stdlib source;
the lexer takes about one second. Order is deterministic (files sorted, docstrings in source order, duplicates
dropped), so the corpus fingerprint, and with it the packed-block cache, is stable across runs. The extracted
documents are cached as JSON in ~/.cache/unified_pretrain, keyed by the Python version and every source file's
size and mtime, so later runs read them in milliseconds.

    builtin_corpus_texts() -> list[str]     one document per topic / docstring
"""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import os
import re
import sys
import sysconfig
from pathlib import Path

from ..atomic import write_text_atomic

MIN_DOCSTRING_CHARS = 200  # shorter docstrings are mostly one-line summaries: little running text
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}

# Comments and string literals, in source order. Single-quoted strings cannot span lines, so a literal the lexer
# misreads (e.g. a 3.12 f-string nesting its own quotes) resynchronises at the end of the line.
_LEX = re.compile(r'''
    \#[^\n]*
  | (?P<prefix>(?<!\w)[rRbBuUfF]{1,2})?
    (?P<lit>"""(?:[^"\\]|\\[\s\S]|"(?!""))*"""
          |\'\'\'(?:[^'\\]|\\[\s\S]|'(?!''))*\'\'\'
          |"(?:[^"\\\n]|\\[\s\S])*"
          |'(?:[^'\\\n]|\\[\s\S])*')
''', re.VERBOSE)


def _docstrings(source: str):
    """Triple-quoted literals that open a block (the code before them ends with ':') or the file."""
    last_code_char, prev_end = None, 0
    for m in _LEX.finditer(source):
        gap = source[prev_end:m.start()].strip()
        if gap:
            last_code_char = gap[-1]
        prev_end = m.end()
        lit = m.group("lit")
        if lit is None:  # a comment
            continue
        prefix = (m.group("prefix") or "").lower()
        if lit[:3] in ('"""', "'''") and prefix in ("", "r", "u") and last_code_char in (None, ":"):
            try:
                text = ast.literal_eval(prefix + lit)
            except (SyntaxError, ValueError):
                text = None
            if isinstance(text, str):
                yield inspect.cleandoc(text)
        last_code_char = lit[-1]


def stdlib_files() -> list[Path]:
    """The standard library's .py files in a stable order, not descending into tests or site-packages."""
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _topics() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data; the docstrings still make a corpus
        return []
    return [topics[k].strip() for k in sorted(topics)]


def _extract(files: list[Path]) -> list[str]:
    docs = dict.fromkeys(t for t in _topics() if t)
    for path in files:
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        docs.update(dict.fromkeys(d for d in _docstrings(source) if len(d) >= MIN_DOCSTRING_CHARS))
    return list(docs)


def _cache_file(files: list[Path]) -> Path:
    """~/.cache/unified_pretrain/builtin-<hash of the Python version and every source file's size and mtime>."""
    stamp = hashlib.sha256(repr((sys.version, MIN_DOCSTRING_CHARS, _LEX.pattern)).encode())
    for p in files:
        st = p.stat()
        stamp.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unified_pretrain"
    return root / f"builtin-corpus-{stamp.hexdigest()[:16]}.json"


@functools.lru_cache(maxsize=1)
def _builtin_corpus() -> tuple[str, ...]:
    """Extract once, then read the JSON cache (the extraction takes a few seconds)."""
    files = stdlib_files()
    cache = _cache_file(files)
    try:
        return tuple(json.loads(cache.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    docs = _extract(files)
    try:  # best effort: a read-only home just means extracting again next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, json.dumps(docs))
    except OSError:
        pass
    return tuple(docs)


def builtin_corpus_texts() -> list[str]:
    """The built-in corpus as a list of documents (~1.8 MB); computed once per process."""
    return list(_builtin_corpus())
