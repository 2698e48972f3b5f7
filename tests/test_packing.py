"""Packing: exact block lengths, documents joined by eos, tail handling, the cache (reuse, invalidation, atomic
writes, a second builder reading the first one's), validation blocks disjoint from training blocks, streaming."""
import time

import datasets
import numpy as np
import pytest

from pretrain.data import packing
from pretrain.data.corpus import DataConfig, load_corpus
from pretrain.data.packing import pack, pack_splits, pack_stream
from pretrain.data.tokenizer import train_tokenizer
from pretrain.errors import UserError

DOCS = [f"doc{i:03d} " + " ".join(["alpha beta gamma", "delta epsilon", "zeta eta theta"][i % 3] for _ in
                                  range(1 + i % 4)) for i in range(60)]


@pytest.fixture(scope="module")
def wp():
    return train_tokenizer("wordpiece", 150, DOCS, progress=False)


@pytest.fixture(scope="module")
def char():
    return train_tokenizer("char", 80, DOCS, progress=False)


def as_dataset(docs):
    return datasets.Dataset.from_dict({"text": docs})


def build_blocks(cfg, tokenizer, block_length, cache):
    """(train, val) blocks of a DataConfig, as the composition root builds them."""
    return pack_splits(*load_corpus(cfg), cfg, tokenizer, block_length, cache)


def ids_of(blocks):
    return blocks[:]["input_ids"]


def expected_stream(tok, docs):
    out = []
    for d in docs:
        out += tok(d, add_special_tokens=False).input_ids + [tok.eos_token_id]
    return out


def test_blocks_are_exact_and_documents_joined_by_eos(tmp_path, wp):
    blocks = pack(as_dataset(DOCS), wp, 16, tmp_path)
    ids = ids_of(blocks)
    assert ids.shape[1] == 16 and ids.dtype.is_floating_point is False
    stream = expected_stream(wp, DOCS)
    assert ids.reshape(-1).tolist() == stream[: len(stream) // 16 * 16]
    assert wp.cls_token_id not in ids  # no post-processor tokens inside documents


def test_tail_drop_and_pad(tmp_path, wp):
    stream = expected_stream(wp, DOCS)
    dropped = pack(as_dataset(DOCS), wp, 50, tmp_path, tail="drop")
    padded = pack(as_dataset(DOCS), wp, 50, tmp_path, tail="pad")
    assert len(dropped) == len(stream) // 50 and len(padded) == -(-len(stream) // 50)
    last = ids_of(padded)[-1].tolist()
    n_real = len(stream) % 50
    assert last[:n_real] == stream[-n_real:] and set(last[n_real:]) == {wp.pad_token_id}


def test_special_token_text_inside_documents_is_plain_text(tmp_path, char):
    blocks = pack(as_dataset(["a </s> b <mask> c"] * 4), char, 8, tmp_path, tail="pad")
    ids = ids_of(blocks).reshape(-1).tolist()
    assert ids.count(char.eos_token_id) == 4 and char.mask_token_id not in ids


def test_cache_reuse_and_invalidation(tmp_path, wp, char, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(DOCS))
    cfg = DataConfig(files=[str(corpus)], validation_fraction=0.1)
    cache = tmp_path / "cache"
    train, val = build_blocks(cfg, wp, 16, cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 2 and all(e.startswith("blocks-") for e in entries)  # train, val; no temp dirs left

    def no_tokenizing(*a, **k):
        raise AssertionError("the cache should have been reused")
    with monkeypatch.context() as m:
        m.setattr(packing, "write_tokens", no_tokenizing)
        start = time.time()
        train2, _ = build_blocks(cfg, wp, 16, cache)
        assert time.time() - start < 5 and ids_of(train2).tolist() == ids_of(train).tolist()
    build_blocks(cfg, char, 16, cache)  # another tokenizer
    build_blocks(cfg, wp, 24, cache)  # another block length
    corpus.write_text("\n\n".join(DOCS[::-1]))  # changed text
    train3, _ = build_blocks(cfg, wp, 16, cache)
    assert len(list(cache.iterdir())) == 8 and ids_of(train3).tolist() != ids_of(train).tolist()


def test_validation_blocks_never_hold_training_documents(tmp_path, char):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(DOCS))
    train, val = build_blocks(DataConfig(files=[str(corpus)], validation_fraction=0.2), char, 32, tmp_path / "k")
    text = {name: char.decode(ids_of(b).reshape(-1).tolist()) for name, b in (("train", train), ("val", val))}
    val_docs = {f"doc{i:03d}" for i in range(60) if f"doc{i:03d}" in text["val"]}
    train_docs = {f"doc{i:03d}" for i in range(60) if f"doc{i:03d}" in text["train"]}
    assert len(val_docs) >= 10 and not val_docs & train_docs


def test_a_second_builder_reads_the_first_ones_cache(tmp_path, wp, monkeypatch):
    main = pack(as_dataset(DOCS), wp, 16, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1 and len(main) > 0
    monkeypatch.setattr(packing, "write_tokens", lambda *a, **k: pytest.fail("the worker should read the cache"))
    worker = pack(as_dataset(DOCS), wp, 16, tmp_path)
    assert ids_of(worker).tolist() == ids_of(main).tolist()


def test_a_builder_without_a_visible_cache_builds_its_own(tmp_path, wp):
    worker = pack(as_dataset(DOCS), wp, 16, tmp_path / "node1")  # node-local disks of another node
    assert len(worker) > 0 and [p.name[:7] for p in (tmp_path / "node1").iterdir()] == ["blocks-"]


def test_too_few_tokens_and_empty_validation(tmp_path, wp):
    with pytest.raises(UserError, match=r"has \d+ tokens, fewer than one block of 4096; .*run.seq_len"):
        pack(as_dataset(DOCS[:3]), wp, 4096, tmp_path)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(DOCS))
    with pytest.raises(UserError, match="the validation split has .* data.validation_fraction"):
        build_blocks(DataConfig(files=[str(corpus)], validation_fraction=0.02), wp, 64, tmp_path / "k")
    _, val = build_blocks(DataConfig(files=[str(corpus)], validation_fraction=0.0), wp, 64, tmp_path / "k")
    assert len(val) == 0


def test_streaming_matches_in_memory(tmp_path, wp):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(DOCS))
    cfg = DataConfig(files=[str(corpus)], validation_fraction=0.0)
    packed, _ = build_blocks(cfg, wp, 16, tmp_path / "k")
    cfg.streaming = True
    streamed, _ = build_blocks(cfg, wp, 16, tmp_path / "k")
    rows = [r["input_ids"].tolist() for r in streamed]
    assert rows == ids_of(packed).tolist()
    shards = [[r["input_ids"].tolist() for r in pack_stream(
        datasets.Dataset.from_dict({"text": DOCS}).to_iterable_dataset(num_shards=2), wp, 16, rank, 2)]
        for rank in range(2)]
    assert shards[0] and shards[1] and shards[0] != shards[1]
    assert all(len(r) == 16 for s in shards for r in s)
    assert np.isin(np.array(shards[0]).ravel(), np.arange(len(wp))).all()
