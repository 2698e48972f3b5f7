"""A pass over a memory-mapped corpus gives its pages back: after training the tokenizer or tokenizing in one
process, the corpus's Arrow files are no longer resident in the process, so memory does not grow with the corpus."""
import os

import datasets
import numpy as np
import pytest

from pretrain.data import mapped_pages, shards
from pretrain.data.corpus import DataConfig, load_corpus
from pretrain.data.packing import pack
from pretrain.data.shards import TOKENS
from pretrain.data.tokenizer import train_tokenizer

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux memory maps only")
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def resident_bytes(files: set[str]) -> int:
    """Resident bytes of this process's mappings of `files` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                inside = len(fields) >= 6 and fields[5] in files
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


@pytest.fixture(scope="module")
def mapped_corpus(tmp_path_factory):
    """A memory-mapped Dataset of ~6 MB of text (50,000 documents) and the set of its Arrow files."""
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, 20)) for _ in range(50_000)]
    folder = tmp_path_factory.mktemp("mapped") / "corpus"
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(folder))
    texts = datasets.load_from_disk(str(folder))
    files = mapped_pages.corpus_files(texts)
    size = sum(os.path.getsize(f) for f in files)
    assert files and size > 5_000_000
    return texts, files, size


def read_all(texts):
    return sum(len(t) for b in texts.iter(batch_size=1000) for t in b["text"])


def test_release_unmaps_the_pages_a_pass_read_and_they_read_again(mapped_corpus):
    texts, files, size = mapped_corpus
    characters = read_all(texts)
    assert resident_bytes(files) > size // 2  # what a plain pass leaves behind
    assert mapped_pages.release(files) >= size
    assert resident_bytes(files) < size // 20
    assert read_all(texts) == characters  # the mapping is still valid


def test_training_a_tokenizer_gives_the_corpus_pages_back(mapped_corpus, monkeypatch):
    texts, files, size = mapped_corpus
    read_all(texts)
    seen = []
    release = mapped_pages.release
    monkeypatch.setattr(mapped_pages, "release", lambda f: seen.append(resident_bytes(f)) or release(f))
    train_tokenizer("wordpiece", 200, texts, progress=False)
    assert len(seen) >= 5  # during the pass, not only at its end
    assert resident_bytes(files) < size // 20


def test_tokenizing_gives_the_pages_back_during_a_task(mapped_corpus, tmp_path, monkeypatch):
    """A split's rows lie scattered over the whole corpus file: a task reading them gives its pages back as it
    goes, not only when it ends (in a worker, or here in the one process)."""
    texts, files, size = mapped_corpus
    tok = train_tokenizer("wordpiece", 200, texts.select(range(1000)), progress=False)
    split = texts.filter(lambda _, i: i % 3 == 0, with_indices=True)  # every third document: an indices mapping
    calls = []
    release = mapped_pages.release
    monkeypatch.setattr(mapped_pages, "release", lambda f: calls.append(resident_bytes(f)) or release(f))
    monkeypatch.setattr(shards, "release", mapped_pages.release)
    monkeypatch.setattr(mapped_pages, "RELEASE_EVERY", 500)
    n_tokens, n_docs = shards.write_tokens(split, tok, tmp_path, num_proc=1)  # 8 tasks of ~2,100 rows
    assert n_docs == len(split) and (tmp_path / TOKENS).stat().st_size == 2 * n_tokens
    assert len(calls) >= 20  # during each task (after every batch of 1,000 rows: 17), not only at its end (8)
    assert resident_bytes(files) < size // 20


def test_packing_leaves_no_corpus_pages_to_the_workers_or_the_training_run(mapped_corpus, tmp_path):
    texts, files, size = mapped_corpus
    tok = train_tokenizer("wordpiece", 200, texts.select(range(1000)), progress=False)
    pack(texts, tok, 64, tmp_path)  # builds the cache
    read_all(texts)  # what reading the corpus (the split, the tokenizer) leaves mapped
    blocks = pack(texts, tok, 64, tmp_path)  # finds it
    assert len(blocks) > 0 and resident_bytes(files) < size // 20


def test_nothing_to_release_for_an_in_memory_corpus():
    texts = datasets.Dataset.from_dict({"text": ["a b c"]})
    assert mapped_pages.corpus_files(texts) == set() and mapped_pages.release(set()) == 0


def test_cleaning_a_file_corpus_gives_the_source_pages_back_during_the_pass(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(WORDS, 20)) for _ in range(50_000)) + "\n")
    seen = []
    release = mapped_pages.release

    def spy(files):
        before = resident_bytes(files)
        advised = release(files)
        seen.append((before, advised, resident_bytes(files)))
        return advised

    monkeypatch.setattr(mapped_pages, "release", spy)
    train, val = load_corpus(DataConfig(files=[str(corpus)]))
    assert len(train) + len(val) == 50_000 and train[0]["text"]
    assert len(seen) >= 4 and all(advised > 0 for _, advised, _ in seen)  # during the pass, every 10,000
    assert max(before for before, _, _ in seen) > 500_000  # what was read since the last release...
    assert max(after for _, _, after in seen) < 200_000  # ...was given back
