"""The token cache on disk: one memory-mapped token file whose stream does not depend on the number of worker
processes, document boundaries kept, the narrowest token type, a full disk refused in one line with nothing left
behind, and `pretrain prepare` making the tokenizer and the blocks that a run then uses without tokenizing."""
import contextlib
import errno
import io
import json
import os
import time

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from pretrain.data import packing, shards
from pretrain.data.packing import pack
from pretrain.data.shards import DOCUMENT_ENDS, TOKENS, TokenBlocks, token_dtype
from pretrain.data.tokenizer import train_tokenizer
from pretrain.errors import UserError
from train_fixtures import write_corpus

DOCS = [f"doc{i:03d} " + " ".join(["alpha beta gamma", "delta epsilon", "zeta eta theta"][i % 3] for _ in
                                  range(1 + i % 5)) for i in range(90)]


@pytest.fixture(scope="module")
def wp():
    return train_tokenizer("wordpiece", 150, DOCS, progress=False)


def as_dataset(docs):
    return datasets.Dataset.from_dict({"text": docs})


def expected_stream(tok, docs):
    out = []
    for d in docs:
        out += tok(d, add_special_tokens=False).input_ids + [tok.eos_token_id]
    return out


@pytest.fixture
def small_tasks(monkeypatch):
    """Tasks of 4 documents, batches of 3: many parts, split mid-task, even on a tiny corpus."""
    monkeypatch.setattr(shards, "ENCODE_BATCH", 3)
    monkeypatch.setattr(shards, "MAX_TASK_ROWS", 4)


@pytest.mark.parametrize("num_proc", [1, 2, 3])
def test_the_stream_is_the_same_whatever_the_number_of_workers(tmp_path, wp, small_tasks, num_proc):
    n_tokens, n_docs = shards.write_tokens(as_dataset(DOCS), wp, tmp_path, num_proc=num_proc)
    stream = np.fromfile(tmp_path / TOKENS, dtype=np.uint16)
    assert stream.tolist() == expected_stream(wp, DOCS) and (n_tokens, n_docs) == (len(stream), len(DOCS))
    ends = np.fromfile(tmp_path / DOCUMENT_ENDS, dtype=np.uint64)
    assert ends.tolist() == (np.flatnonzero(stream == wp.eos_token_id) + 1).tolist()  # the document boundaries
    assert sorted(p.name for p in tmp_path.iterdir()) == [DOCUMENT_ENDS, TOKENS]  # the part files are gone


def test_workers_really_run_in_parallel_processes(tmp_path, wp, small_tasks, monkeypatch):
    real = shards.encode_documents
    out = tmp_path / "out"
    out.mkdir()

    def recording(*args):
        began = time.time()
        time.sleep(0.05)  # long enough for the batches of two workers to overlap
        result = real(*args)
        with open(tmp_path / f"pid-{os.getpid()}", "a") as f:
            f.write(f"{began} {time.time()}\n")
        return result

    monkeypatch.setattr(shards, "encode_documents", recording)  # forked workers inherit the patch
    shards.write_tokens(as_dataset(DOCS), wp, out, num_proc=2)
    spans = {p.name: [tuple(map(float, line.split())) for line in p.read_text().splitlines()]
             for p in tmp_path.glob("pid-*")}
    assert len(spans) >= 2 and f"pid-{os.getpid()}" not in spans  # worker processes, not this one
    intervals = sorted(iv for ivs in spans.values() for iv in ivs)
    assert any(b[0] < a[1] for a, b in zip(intervals, intervals[1:]))  # two batches ran at the same time


def test_blocks_are_a_memory_mapped_view_with_the_narrowest_type(tmp_path, wp):
    blocks = pack(as_dataset(DOCS), wp, 16, tmp_path)
    assert isinstance(blocks.array, np.memmap) and blocks.array.dtype == np.uint16
    stream = expected_stream(wp, DOCS)
    assert blocks[:]["input_ids"].reshape(-1).tolist() == stream[: len(stream) // 16 * 16]
    rows = blocks[[3, 0, 3]]["input_ids"]
    assert rows.dtype.is_floating_point is False and rows.tolist() == [stream[48:64], stream[:16], stream[48:64]]
    assert blocks.document_ends()[-1] == len(stream) and blocks.token_count == len(stream)


def test_a_vocabulary_beyond_uint16_is_stored_as_uint32(tmp_path):
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, 70_000)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    assert token_dtype(tok) == np.uint32
    blocks = pack(as_dataset(["w3 w69999 w5"] * 10), tok, 4, tmp_path)
    assert blocks.array.dtype == np.uint32 and blocks[0]["input_ids"].tolist() == [3, 69999, 5, 1]


def test_a_full_disk_is_one_line_leaves_nothing_and_the_rerun_builds(tmp_path, wp, small_tasks, monkeypatch):
    real = shards.encode_documents

    def disk_full_at_doc_050(texts, *args):
        if any(t.startswith("doc050") for t in texts):  # a task in the middle of the corpus, in whichever process
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(texts, *args)

    cache = tmp_path / "cache"
    monkeypatch.setattr(shards, "encode_documents", disk_full_at_doc_050)
    for num_proc in (1, 2):
        with pytest.raises(UserError) as e:
            pack(as_dataset(DOCS), wp, 16, cache, num_proc=num_proc)
        message = str(e.value)
        assert "\n" not in message and "No space left on device" in message and "run.cache_dir" in message
        assert list(cache.iterdir()) == []  # no half cache, no temporary directory
    monkeypatch.setattr(shards, "encode_documents", real)
    blocks = pack(as_dataset(DOCS), wp, 16, cache, num_proc=2)
    assert len(blocks) == len(expected_stream(wp, DOCS)) // 16


def test_too_few_tokens_leaves_no_cache(tmp_path, wp):
    with pytest.raises(UserError, match=r"has \d+ tokens, fewer than one block of 4096"):
        pack(as_dataset(DOCS[:3]), wp, 4096, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_prepare_makes_the_tokenizer_and_blocks_a_run_then_uses(tmp_path, monkeypatch):
    from pretrain.cli import main
    from pretrain.data import tokenizer as tokenizer_module
    from pretrain.train import build
    from pretrain.train.main import train_main

    corpus = write_corpus(tmp_path / "corpus")
    flags = ["--data.files", json.dumps([str(corpus)]), "--model.preset", "bert", "--model.d_model", "32",
             "--model.n_layers", "1", "--model.n_heads", "2", "--model.d_ff", "64", "--tokenizer.vocab_size",
             "300", "--run.seq_len", "16", "--run.cache_dir", str(tmp_path / "cache")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["prepare", *flags]) == 0
    assert "prepared:" in out.getvalue() and "validation blocks of 16 tokens" in out.getvalue()
    made = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert made == ["blocks", "blocks", "tokenizer"]  # train and validation blocks, the tokenizer

    def refuse(*a, **k):
        raise AssertionError("the prepared tokenizer and blocks should have been used")
    monkeypatch.setattr(packing, "write_tokens", refuse)
    monkeypatch.setattr(build, "tokenizer_for", refuse)
    monkeypatch.setattr(tokenizer_module, "train_tokenizer", refuse)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        train_main(None, [*flags, "--run.max_steps", "2", "--run.batch_size", "4", "--run.eval_batches", "1",
                          "--run.progress", "false", "--run.sample", "false",
                          "--run.output_dir", str(tmp_path / "run")])
    assert "tokenizer: made by `pretrain prepare`" in log.getvalue()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]


def test_prepare_refuses_a_streamed_corpus(capsys):
    from pretrain.cli import main

    assert main(["prepare", "--data.streaming", "true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.streaming" in err


def test_in_memory_blocks_read_like_the_file(wp):
    array = np.arange(24, dtype=np.int64).reshape(3, 8)
    blocks = TokenBlocks(array)
    assert len(blocks) == 3 and blocks.block_length == 8 and blocks[1]["input_ids"].tolist() == list(range(8, 16))


@pytest.mark.parametrize("chunk", [3, 1 << 20])  # boundaries read a few at a time, or all in one chunk
@pytest.mark.parametrize("tail", ["drop", "pad"])
@pytest.mark.parametrize("length", [5, 8, 16])
def test_statistics_from_document_boundaries_equal_a_pass_over_the_tokens(tmp_path, wp, tail, length, chunk,
                                                                           monkeypatch):
    from pretrain.data import shards
    from pretrain.data.packing import packing_stats

    monkeypatch.setattr(shards, "STATS_CHUNK", chunk)
    blocks = pack(as_dataset(DOCS), wp, length, tmp_path, tail=tail)
    in_memory = TokenBlocks(np.asarray(blocks.array))  # no directory: the chunked pass over every token
    slow = packing_stats(in_memory, wp.eos_token_id, wp.pad_token_id, rows_per_chunk=7)
    fast = packing_stats(blocks, wp.eos_token_id, wp.pad_token_id)
    ending_on_eos = int((np.asarray(blocks.array)[:, -1] == wp.eos_token_id).sum())
    assert fast == pytest.approx(slow) and (length != 8 or ending_on_eos > 0)  # the case it counts does occur


def test_a_recipe_prepares_with_its_own_defaults(tmp_path, capsys):
    from pretrain.cli import run_recipe

    corpus = write_corpus(tmp_path / "corpus", n_paragraphs=60)
    defaults = {"model": {"preset": "gpt2"}, "objective": {"name": "clm"},
                "tokenizer": {"kind": "bpe", "vocab_size": 300}, "run": {"seq_len": 24}}
    with pytest.raises(SystemExit) as e:
        run_recipe(defaults, ["prepare", "--data.files", json.dumps([str(corpus)]),
                              "--run.cache_dir", str(tmp_path / "cache")])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "validation blocks of 25 tokens" in out  # clm's block is seq_len + 1: the recipe's objective and length
