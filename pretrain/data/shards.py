"""The token cache on disk: a corpus tokenized once, in parallel, into one memory-mapped token file.

    write_tokens(texts, tokenizer, directory, num_proc=None) -> (n_tokens, n_documents)
    TokenBlocks.open(directory, block_length, tail, pad_id) -> blocks; len(blocks), blocks[indices]["input_ids"]

The documents are cut into tasks of consecutive rows; worker processes (the machine's cores, or `num_proc`) each
tokenize a task at a time into a part file of their own, a batch of documents at a time, so memory does not grow
with the corpus. The parts are then appended in document order into `tokens.bin` (uint16 when the vocabulary
fits, else uint32: every document followed by eos) and `document_ends.bin` (uint64: the stream offset after each
document's eos), so the stream is the same whatever the number of workers. Blocks are a view of the file: block i
is tokens [i * L, (i + 1) * L), read from disk only when a batch needs it.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from .mapped_pages import corpus_files, note_read, release


TOKENS, DOCUMENT_ENDS, META = "tokens.bin", "document_ends.bin", "meta.json"
ENCODE_BATCH = 1000  # documents per encode_batch call
MAX_TASK_ROWS = 100_000
COPY_BYTES = 1 << 24
STATS_CHUNK = 1 << 20  # document boundaries per step of TokenBlocks.stats
_JOB: dict = {}  # what a forked worker inherits: the texts, the tokenizer backend, eos id and token dtype


def token_dtype(tokenizer) -> np.dtype:
    return np.dtype(np.uint16) if len(tokenizer) <= 1 << 16 else np.dtype(np.uint32)


def plain_backend(tokenizer) -> Tokenizer:
    """A copy of the Rust tokenizer without post-processor, reading special-token text as plain text, so eos
    positions in the stream are exactly the document boundaries."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.encode_special_tokens = True
    return backend


def encode_documents(texts: list[str], backend, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids of the documents, each followed by eos, as int64; the length of each document with its eos)."""
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    docs = [e.ids for e in encode(texts, add_special_tokens=False)]
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    ids = np.empty(int(lengths.sum()), dtype=np.int64)
    ends = np.cumsum(lengths)
    for doc, end, length in zip(docs, ends, lengths):
        ids[end - length:end - 1] = doc
    ids[ends - 1] = eos_id
    return ids, lengths


def _write_part(task: tuple[int, int, str]) -> tuple[int, int]:
    """Tokenize rows [start, stop) into part files `prefix.tokens` / `prefix.lengths`; (tokens, documents)."""
    start, stop, prefix = task
    texts, backend, eos, dtype, files = (_JOB[k] for k in ("texts", "backend", "eos", "dtype", "files"))
    n_tokens = n_docs = 0
    with open(prefix + ".tokens", "wb") as tokens, open(prefix + ".lengths", "wb") as lengths:
        for a in range(start, stop, ENCODE_BATCH):
            ids, doc_lengths = encode_documents(texts[a:min(a + ENCODE_BATCH, stop)]["text"], backend, eos)
            tokens.write(ids.astype(dtype).tobytes())
            lengths.write(doc_lengths.tobytes())
            n_tokens, n_docs = n_tokens + len(ids), n_docs + len(doc_lengths)
            note_read(files, len(doc_lengths))  # a split's rows lie scattered over the corpus's pages
    release(files)
    return n_tokens, n_docs


def workers_for(num_proc: int | None, n_rows: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = num_proc if num_proc else cores
    return max(1, min(wanted, math.ceil(n_rows / ENCODE_BATCH)))


@contextmanager
def _pool(workers: int):
    """Forked workers (they inherit _JOB without pickling the corpus), each with a single-threaded tokenizer: the
    parallelism is the processes'."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        ctx = multiprocessing.get_context(method)
        # a fresh worker per task: the pages of the corpus a task read leave with it (memory stays flat)
        if method == "fork":
            pool = ctx.Pool(workers, maxtasksperchild=1)
        else:
            pool = ctx.Pool(workers, initializer=_JOB.update, initargs=(dict(_JOB),), maxtasksperchild=1)
        with pool:
            yield pool
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def write_tokens(texts, tokenizer, directory: Path, num_proc: int | None = None) -> tuple[int, int]:
    """Tokenize `texts` (a Dataset with a "text" column) into directory/tokens.bin and document_ends.bin; see
    the module docstring. Returns (tokens, documents)."""
    directory = Path(directory)
    n_rows = len(texts)
    workers = workers_for(num_proc, n_rows)
    rows = min(MAX_TASK_ROWS, max(ENCODE_BATCH, math.ceil(n_rows / (workers * 8))))
    tasks = [(a, min(a + rows, n_rows), str(directory / f"part-{i:06d}")) for i, a in enumerate(range(0, n_rows, rows))]
    _JOB.update(texts=texts, backend=plain_backend(tokenizer), eos=tokenizer.eos_token_id,
                dtype=token_dtype(tokenizer), files=corpus_files(texts))
    try:
        with _Appender(directory) as out:
            if workers == 1:
                for task in tasks:
                    out.append(task[2], _write_part(task))
            else:
                with _pool(workers) as pool:
                    for task, counts in zip(tasks, pool.imap(_write_part, tasks)):  # in task order
                        out.append(task[2], counts)
    finally:
        _JOB.clear()
    return out.tokens, out.documents


class _Appender:
    """Appends each finished part, in order, to tokens.bin and document_ends.bin, and deletes it."""

    def __init__(self, directory: Path):
        self.directory, self.tokens, self.documents = directory, 0, 0

    def __enter__(self):
        self._tokens = open(self.directory / TOKENS, "wb")
        self._ends = open(self.directory / DOCUMENT_ENDS, "wb")
        return self

    def __exit__(self, *exc):
        self._tokens.close()
        self._ends.close()

    def append(self, prefix: str, counts: tuple[int, int]):
        with open(prefix + ".tokens", "rb") as part:
            shutil.copyfileobj(part, self._tokens, COPY_BYTES)
        lengths = np.fromfile(prefix + ".lengths", dtype=np.int64)
        self._ends.write((np.cumsum(lengths) + self.tokens).astype(np.uint64).tobytes())
        os.remove(prefix + ".tokens")
        os.remove(prefix + ".lengths")
        self.tokens, self.documents = self.tokens + counts[0], self.documents + counts[1]


def finish_blocks(directory: Path, tokenizer, n_tokens: int, n_docs: int, block_length: int, tail: str) -> int:
    """Pad the stream to whole blocks (tail "pad") and write meta.json; the number of blocks."""
    dtype = token_dtype(tokenizer)
    if tail == "pad" and n_tokens % block_length:
        padding = block_length - n_tokens % block_length
        with open(Path(directory) / TOKENS, "ab") as f:
            f.write(np.full(padding, tokenizer.pad_token_id, dtype=dtype).tobytes())
    n_blocks = -(-n_tokens // block_length) if tail == "pad" else n_tokens // block_length
    meta = {"dtype": dtype.name, "tokens": n_tokens, "documents": n_docs, "block_length": block_length,
            "blocks": n_blocks, "tail": tail}
    (Path(directory) / META).write_text(json.dumps(meta))
    return n_blocks


class TokenBlocks:
    """[n_blocks, block_length] blocks over a memory-mapped token file (or an in-memory array): `len(blocks)` and
    `blocks[i | slice | indices]["input_ids"]` -> LongTensor, the way the trainer reads a datasets.Dataset."""

    def __init__(self, array: np.ndarray, directory: Path | None = None, meta: dict | None = None):
        self.array, self.directory, self.meta = array, directory, meta or {}

    @classmethod
    def open(cls, directory: Path) -> "TokenBlocks":
        directory = Path(directory)
        meta = json.loads((directory / META).read_text())
        n, length = meta["blocks"], meta["block_length"]
        if n == 0:
            return cls(np.zeros((0, length), np.dtype(meta["dtype"])), directory, meta)
        array = np.memmap(directory / TOKENS, dtype=meta["dtype"], mode="r", shape=(n * length,))
        return cls(array.reshape(n, length), directory, meta)

    @property
    def token_count(self) -> int:
        """Tokens of the corpus stream (before the tail was dropped or padded)."""
        return self.meta.get("tokens", self.array.size)

    @property
    def block_length(self) -> int:
        return self.array.shape[1]

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, index) -> dict:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return {"input_ids": torch.from_numpy(np.asarray(self.array[index], dtype=np.int64))}

    def document_ends(self) -> np.ndarray:
        """The stream offset after each document's eos (memory-mapped): the document boundaries."""
        path = self.directory / DOCUMENT_ENDS
        return np.memmap(path, dtype=np.uint64, mode="r") if path.stat().st_size else np.zeros(0, np.uint64)

    def stats(self) -> dict:
        """packing.packing_stats from the document boundaries alone (no pass over the tokens): documents per block
        (pieces a block cut count too), the share of real (not padding) tokens, mean document length."""
        n, length = len(self), self.block_length
        region = n * length
        real = min(self.token_count, region)  # the dropped tail is outside; a padded one is inside, not real
        path, inside, ending_on_eos = self.directory / DOCUMENT_ENDS, 0, 0
        n_ends = path.stat().st_size // 8
        for start in range(0, n_ends, STATS_CHUNK):  # read in chunks (not mapped whole): memory stays flat
            ends = np.fromfile(path, dtype=np.uint64, count=min(STATS_CHUNK, n_ends - start), offset=8 * start)
            ends = ends[ends <= real]  # documents whose eos is inside the blocks
            inside += len(ends)
            ending_on_eos += int(np.count_nonzero(ends % length == 0))  # full blocks whose last token is an eos
        pieces = inside + real // length - ending_on_eos  # a full block not ending on eos holds one more piece
        return {"documents_per_block": pieces / max(n, 1), "real_token_fraction": real / max(region, 1),
                "mean_document_length": real / max(inside, 1)}
