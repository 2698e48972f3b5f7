"""The built-in downstream task (pretrain/data/builtin_task.py): size, class balance, no overlap with the pretraining
corpus or between splits, a module's docstrings in one split, and a deterministic build independent of file order."""
from collections import Counter

import pytest

import pretrain.data.builtin_task as builtin_task
from pretrain.data.builtin import MIN_DOCSTRING_CHARS, builtin_corpus_texts
from pretrain.data.builtin_task import BUILTIN_TASK, BUILTIN_TASK_DESCRIPTION, builtin_task_labels, \
    builtin_task_splits

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    """The task built afresh in an empty cache directory, which the module's tests then use."""
    home = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        builtin_task._builtin_task.cache_clear()
        yield home
    builtin_task._builtin_task.cache_clear()


@pytest.fixture(scope="module")
def splits(cache_home):
    return builtin_task_splits()


def test_size_classes_and_balance(splits):
    assert BUILTIN_TASK == "stdlib-area" and BUILTIN_TASK_DESCRIPTION
    assert list(splits) == list(SPLITS)
    labels = builtin_task_labels()
    assert labels == sorted(labels) and len(labels) >= 4
    assert sum(map(len, splits.values())) >= 2000
    for split, rows in splits.items():
        assert all(set(r) == {"text", "label"} and isinstance(r["text"], str) and r["text"] for r in rows)
        counts = Counter(r["label"] for r in rows)
        assert sorted(counts) == labels, f"{split} lacks a class"
        assert max(counts.values()) / len(rows) <= 0.4, f"{split}: majority class {counts.most_common(1)}"
    assert len(splits["train"]) >= 1500 and len(splits["validation"]) >= 300 and len(splits["test"]) >= 600


def test_no_text_in_the_pretraining_corpus(splits):
    corpus = builtin_corpus_texts()
    raw, collapsed = set(corpus), {" ".join(doc.split()) for doc in corpus}
    for rows in splits.values():
        for r in rows:
            assert r["text"] not in raw and r["text"] not in collapsed, r["text"]
            assert len(r["text"]) < MIN_DOCSTRING_CHARS


def test_splits_disjoint_and_modules_unseen(splits):
    texts = [r["text"] for rows in splits.values() for r in rows]
    assert len(texts) == len(set(texts)), "a text occurs twice (in one split or in two)"
    split_of = {r["text"]: split for split, rows in splits.items() for r in rows}
    splits_of_file = {}
    for rel, _, text in builtin_task._examples(builtin_task.stdlib_files()):
        if text in split_of:
            splits_of_file.setdefault(rel, set()).add(split_of[text])
    straddling = {rel: s for rel, s in splits_of_file.items() if len(s) > 1}
    assert not straddling, f"files whose docstrings straddle splits: {straddling}"


def test_deterministic_cached_and_independent_of_file_order(splits, cache_home, tmp_path, monkeypatch):
    assert len(list((cache_home / "unified_pretrain").glob("builtin-task-*.json"))) == 1
    try:
        builtin_task._builtin_task.cache_clear()
        assert builtin_task_splits() == splits  # read back from the JSON cache

        files = builtin_task.stdlib_files()
        monkeypatch.setattr(builtin_task, "stdlib_files", lambda: files[::-1])
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        builtin_task._builtin_task.cache_clear()
        rebuilt = builtin_task_splits()  # built afresh, the files listed the other way round
        assert list((tmp_path / "unified_pretrain").glob("builtin-task-*.json"))
        assert rebuilt == splits
    finally:
        builtin_task._builtin_task.cache_clear()


def test_returns_a_fresh_copy(splits):
    rows = builtin_task_splits()
    rows["train"].clear()
    assert builtin_task_splits()["train"] == splits["train"]
