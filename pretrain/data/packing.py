"""Packing: documents -> one token stream (documents joined by eos) -> blocks of exactly block_length tokens.

    pack(texts, tokenizer, block_length, cache_dir, tail="drop", num_proc=None) -> shards.TokenBlocks
                                                            len(), blocks[indices]["input_ids"] -> LongTensor
    pack_splits(train_texts, val_texts, data_cfg, tokenizer, block_length, cache_dir, rank=0, world_size=1)
                                                            -> (train_blocks, val_blocks)
    pack_stream(texts, tokenizer, block_length, rank=0, world_size=1) -> datasets.IterableDataset (streaming)

The stream is tokenized once, in parallel worker processes, into a memory-mapped token file (pretrain/data/
shards.py): peak memory does not grow with the corpus, and training reads only the blocks of each batch from
disk. Documents are encoded without the post-processor's [CLS]/[SEP] and with special-token text inside
documents read as plain text, so eos positions in the stream are exactly the document boundaries.

Cache: cache_dir/blocks-<key>, key = hash(corpus fingerprint, tokenizer.json hash, block_length, tail), written
to a temporary directory and renamed into place, so a crash or a full disk never leaves a half cache and a changed
corpus or tokenizer never reuses a stale one. The caller lets the main process build it first; a process that
still finds no cache (node-local disks on several nodes) builds its own copy, and the atomic rename makes that
safe.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
from datasets.distributed import split_dataset_by_node

from ..atomic import atomic_dir
from ..errors import UserError
from .mapped_pages import corpus_files, release
from .shards import ENCODE_BATCH, TokenBlocks, encode_documents, finish_blocks, plain_backend, write_tokens
from .tokenizer import tokenizer_fingerprint

CACHE_VERSION = 2
STREAM_VAL_DOCUMENTS = 2000  # streaming mode: validation = the first this many held-out documents


def _check_eos(tokenizer):
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no eos_token to separate documents; add one with "
                        "pretrain.data.tokenizer.ensure_special_tokens(tokenizer, ('eos_token',))")


def token_stream(texts, tokenizer) -> np.ndarray:
    """All documents' ids, each followed by eos, as one int32 array in memory (for small splits)."""
    _check_eos(tokenizer)
    backend = plain_backend(tokenizer)
    parts = [encode_documents(texts[a:a + ENCODE_BATCH]["text"], backend, tokenizer.eos_token_id)[0]
             for a in range(0, len(texts), ENCODE_BATCH)]
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


def cache_key(texts, tokenizer, block_length: int, tail: str) -> str:
    fingerprint = getattr(texts, "_fingerprint", None)
    if fingerprint is None:
        raise ValueError("pack() needs a datasets.Dataset (it keys the cache on the dataset fingerprint)")
    parts = [CACHE_VERSION, fingerprint, len(texts), tokenizer_fingerprint(tokenizer), block_length, tail]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def cache_path(texts, tokenizer, block_length: int, cache_dir, tail: str = "drop") -> Path:
    return Path(cache_dir) / f"blocks-{cache_key(texts, tokenizer, block_length, tail)}"


def pack(texts, tokenizer, block_length: int, cache_dir, tail: str = "drop", num_proc=None,
         what: str = "the corpus", fix: str = "give more text or use a smaller run.seq_len") -> TokenBlocks:
    """Packed, cached blocks of `texts` (a Dataset with a "text" column); see the module docstring."""
    if block_length < 1:
        raise UserError(f"block length {block_length} must be positive; raise run.seq_len")
    if tail not in ("drop", "pad"):
        raise UserError(f"data.tail {tail!r} is unknown; use drop or pad")
    if tail == "pad" and tokenizer.pad_token_id is None:
        raise UserError("data.tail 'pad' needs the tokenizer's pad_token; add one or use data.tail drop")
    _check_eos(tokenizer)
    path = cache_path(texts, tokenizer, block_length, cache_dir, tail)
    # the corpus pages reading it so far left mapped (the split's index, record-batch headers): neither the
    # tokenizing workers nor the training run that follows need them
    release(corpus_files(texts))
    if not path.exists():
        try:
            with atomic_dir(path, if_exists="keep") as tmp:  # a concurrent builder may publish the same cache first
                n_tokens, n_docs = write_tokens(texts, tokenizer, tmp, num_proc)
                if finish_blocks(tmp, tokenizer, n_tokens, n_docs, block_length, tail) == 0:
                    raise UserError(f"{what} has {n_tokens} tokens, fewer than one block of {block_length}; {fix}")
        except OSError as e:
            raise UserError(f"cannot write the token cache {path}: {e.strerror or e}; free disk space there or "
                            f"set run.cache_dir to another disk, then run again") from None
    return TokenBlocks.open(path)


def packing_stats(blocks, eos_id: int, pad_id, rows_per_chunk: int = 8192) -> dict:
    """How documents fill the blocks: documents per block (pieces of a document the block cut count too), the
    share of tokens that are not padding, and the mean document length in tokens (its EOS included). Blocks of the
    token cache answer from their document boundaries; others are read in chunks, so memory stays flat."""
    if isinstance(blocks, TokenBlocks) and blocks.directory is not None and pad_id != eos_id:
        return blocks.stats()
    n_blocks = len(blocks)
    pieces = real = eos = total = 0
    for start in range(0, n_blocks, rows_per_chunk):
        ids = np.asarray(blocks[start:start + rows_per_chunk]["input_ids"])
        is_real = ids != pad_id if pad_id is not None and pad_id != eos_id else np.ones(ids.shape, bool)
        is_eos = (ids == eos_id) & is_real
        n_real = is_real.sum(axis=1)
        last = ids[np.arange(len(ids)), np.maximum(n_real - 1, 0)]
        pieces += int(is_eos.sum() + ((n_real > 0) & (last != eos_id)).sum())
        real, eos, total = real + int(n_real.sum()), eos + int(is_eos.sum()), total + ids.size
    return {"documents_per_block": pieces / max(n_blocks, 1), "real_token_fraction": real / max(total, 1),
            "mean_document_length": real / max(eos, 1)}


# ---- streaming ------------------------------------------------------------------------------------------------
def _stream_blocks(texts, tokenizer, block_length: int, tail: str):
    backend, eos = plain_backend(tokenizer), tokenizer.eos_token_id
    buffer = np.zeros(0, np.int32)
    for batch in texts.iter(batch_size=ENCODE_BATCH):
        buffer = np.concatenate([buffer, encode_documents(batch["text"], backend, eos)[0].astype(np.int32)])
        n = len(buffer) // block_length
        for row in buffer[: n * block_length].reshape(n, block_length):
            yield {"input_ids": row}
        buffer = buffer[n * block_length:]
    if tail == "pad" and len(buffer):
        yield {"input_ids": np.concatenate([buffer, np.full(block_length - len(buffer), tokenizer.pad_token_id,
                                                            np.int32)])}


def pack_stream(texts, tokenizer, block_length: int, rank: int = 0, world_size: int = 1, tail: str = "drop"):
    """Blocks of a streaming corpus, this process's shard only (split_dataset_by_node; do not shard again)."""
    if world_size > 1:
        texts = split_dataset_by_node(texts, rank=rank, world_size=world_size)
    return datasets.IterableDataset.from_generator(
        _stream_blocks, gen_kwargs={"texts": texts, "tokenizer": tokenizer, "block_length": block_length,
                                    "tail": tail}).with_format("torch")


# ---- both splits ----------------------------------------------------------------------------------------------
def validation_texts(val_texts):
    """The validation split as a Dataset: a streamed one is cut to its first STREAM_VAL_DOCUMENTS documents."""
    if hasattr(val_texts, "__len__"):
        return val_texts
    docs = [row["text"] for row in val_texts.take(STREAM_VAL_DOCUMENTS)]
    return datasets.Dataset.from_dict({"text": docs}, features=datasets.Features({"text": datasets.Value("string")}))


def pack_splits(train_texts, val_texts, data_cfg, tokenizer, block_length: int, cache_dir, rank: int = 0,
                world_size: int = 1):
    """(train_blocks, val_blocks) of a corpus's two splits (pretrain.data.corpus.load_corpus). Streaming: train
    is an IterableDataset of this rank's shard; validation is packed from the first STREAM_VAL_DOCUMENTS held-out
    documents."""
    val_texts = validation_texts(val_texts)
    common = dict(tokenizer=tokenizer, block_length=block_length, cache_dir=cache_dir, tail=data_cfg.tail,
                  num_proc=data_cfg.num_proc)
    if data_cfg.streaming:
        train = pack_stream(train_texts, tokenizer, block_length, rank, world_size, data_cfg.tail)
    else:
        train = pack(train_texts, what="the training corpus", **common)
    if len(val_texts) == 0:
        val = TokenBlocks(np.zeros((0, block_length), np.int64))
    else:
        val = pack(val_texts, what="the validation split",
                   fix="raise data.validation_fraction, give data.validation_files, or use a smaller run.seq_len",
                   **common)
    return train, val
