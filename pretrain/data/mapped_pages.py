"""Give back the pages of memory-mapped corpus files that a pass over the corpus has read.

`datasets` reads its Arrow files through read-only memory maps. Every page a pass touches stays mapped into the
process (and counted in its RSS) until the dataset object goes away, so one pass over a 1 GB corpus -- training
the tokenizer, or tokenizing in a single process -- leaves 1 GB resident. Those pages are clean page cache the
kernel could drop anyway; releasing them behind the reader (madvise MADV_DONTNEED on the file's mappings) makes
the process's memory what it really needs, independent of the corpus size. A page read again later is simply
read again from the page cache. Linux only; elsewhere this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

MADV_DONTNEED = 4
RELEASE_EVERY = 10_000  # documents read between two releases: ~2 MB of text read in order, <= 40 MB scattered
_MAPS = "/proc/self/maps"
_libc = None


def corpus_files(texts) -> set[str]:
    """The Arrow files behind a datasets.Dataset (none for an in-memory one)."""
    return {os.path.realpath(f["filename"]) for f in getattr(texts, "cache_files", None) or []}


def release(files: set[str]) -> int:
    """Unmap from this process's memory every resident page of the read-only mappings of `files` (the mappings
    stay valid: a later read faults the page back in from the page cache). Returns the bytes advised."""
    global _libc
    if not files or not os.path.exists(_MAPS):
        return 0
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    with open(_MAPS) as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or "w" in fields[1] or fields[5].strip() not in files:
                continue  # never a writable mapping: its pages may hold changes
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if _libc.madvise(start, end - start, MADV_DONTNEED) == 0:
                advised += end - start
    return advised


_unreleased: dict[tuple, int] = {}  # documents read from each set of files since its pages were last given back


def note_read(files, documents: int):
    """Count `documents` read from `files` and give their pages back every RELEASE_EVERY documents: for a pass
    that runs inside a library (datasets' map calls this from its function)."""
    key = tuple(sorted(files))
    read = _unreleased.get(key, 0) + documents
    if read >= RELEASE_EVERY:
        release(set(key))
        read = 0
    _unreleased[key] = read


def releasing(batches, files: set[str]):
    """The batches (lists of documents) unchanged, giving the pages of `files` back every RELEASE_EVERY
    documents and once at the end."""
    for batch in batches:
        yield batch
        note_read(files, len(batch))
    release(files)
