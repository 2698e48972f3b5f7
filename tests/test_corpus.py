"""Corpus loading: every file format, globs, mixing, the validation split, the built-in corpus, and bad input."""
import json
import time

import pytest

from pretrain.data.builtin import _builtin_corpus, _docstrings
from pretrain.data.corpus import DataConfig, load_corpus
from pretrain.errors import UserError

DOCS = [f"document {i} says hello to number {i * 7}." for i in range(40)]


def write_txt(path, docs, sep="\n\n"):
    path.write_text(sep.join(docs) + "\n")
    return str(path)


def texts(ds):
    return list(ds["text"])


def load_all(**kw):
    train, val = load_corpus(DataConfig(validation_fraction=kw.pop("validation_fraction", 0.0), **kw))
    return texts(train), texts(val)


def test_txt_paragraphs_and_lines(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first para\nstill first\n\n\n\nsecond para\n\n   \nthird\n")
    assert load_all(files=[str(f)])[0] == ["first para\nstill first", "second para", "third"]
    assert load_all(files=[str(f)], txt_split="line")[0] == ["first para", "still first", "second para", "third"]


def test_jsonl_json_parquet_csv(tmp_path):
    import pandas as pd

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    (tmp_path / "b.json").write_text(json.dumps([{"body": d} for d in DOCS]))
    pd.DataFrame({"body": DOCS, "n": range(len(DOCS))}).to_parquet(tmp_path / "c.parquet")
    pd.DataFrame({"x": range(len(DOCS)), "body": DOCS}).to_csv(tmp_path / "d.csv", index=False)
    for name in ("a.jsonl", "b.json", "c.parquet", "d.csv"):
        assert load_all(files=[str(tmp_path / name)], text_column="body")[0] == DOCS, name


def test_glob_directory_and_mixed_formats(tmp_path):
    write_txt(tmp_path / "x1.txt", DOCS[:10])
    write_txt(tmp_path / "x2.txt", DOCS[10:20])
    (tmp_path / "x3.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[20:]))
    assert sorted(load_all(files=[str(tmp_path / "x*.txt")])[0]) == sorted(DOCS[:20])
    assert sorted(load_all(files=[str(tmp_path)])[0]) == sorted(DOCS)


def test_mixing_with_weights(tmp_path):
    a = write_txt(tmp_path / "a.txt", [f"alpha {i}" for i in range(30)])
    b = write_txt(tmp_path / "b.txt", [f"beta {i}" for i in range(10)])
    plain = load_all(files=[a, b])[0]
    assert len(plain) == 40
    mixed = load_all(files=[a, b], weights=[1.0, 3.0])[0]
    betas = sum(t.startswith("beta") for t in mixed)
    assert set(mixed) == set(plain) and betas > len(mixed) / 2  # the small source is repeated
    with pytest.raises(UserError, match="one weight per source"):
        load_corpus(DataConfig(files=[a, b], weights=[1.0]))


def test_validation_split_is_disjoint_and_deterministic(tmp_path):
    f = write_txt(tmp_path / "a.txt", DOCS)
    cfg = DataConfig(files=[f], validation_fraction=0.2, seed=3)
    train, val = map(texts, load_corpus(cfg))
    assert len(val) == 8 and not set(train) & set(val) and sorted(train + val) == sorted(DOCS)
    assert texts(load_corpus(cfg)[1]) == val
    assert texts(load_corpus(DataConfig(files=[f], validation_fraction=0.2, seed=4))[1]) != val


def test_validation_split_is_the_first_documents_of_a_seeded_permutation(tmp_path):
    """The documents held out are those of numpy's seeded permutation (as before the split became a filter), kept
    in corpus order; the fingerprints, which key the caches, change with the seed and the fraction."""
    import numpy as np

    f = write_txt(tmp_path / "a.txt", DOCS)
    train, val = load_corpus(DataConfig(files=[f], validation_fraction=0.2, seed=3))
    held_out = set(np.random.default_rng(3).permutation(len(DOCS))[:8].tolist())
    assert texts(val) == [d for i, d in enumerate(DOCS) if i in held_out]
    assert texts(train) == [d for i, d in enumerate(DOCS) if i not in held_out]
    prints = {(s.seed, s.validation_fraction): tuple(x._fingerprint for x in load_corpus(s))
              for s in (DataConfig(files=[f], validation_fraction=0.2, seed=3),
                        DataConfig(files=[f], validation_fraction=0.2, seed=4),
                        DataConfig(files=[f], validation_fraction=0.3, seed=3))}
    assert len({p for pair in prints.values() for p in pair}) == 6


def test_validation_files(tmp_path):
    f = write_txt(tmp_path / "a.txt", DOCS[:30])
    v = write_txt(tmp_path / "v.txt", DOCS[30:])
    train, val = map(texts, load_corpus(DataConfig(files=[f], validation_files=[v])))
    assert train == DOCS[:30] and val == DOCS[30:]


def test_streaming_split(tmp_path):
    f = write_txt(tmp_path / "a.txt", DOCS)
    train, val = load_corpus(DataConfig(files=[f], streaming=True, validation_fraction=0.3))
    train, val = [r["text"] for r in train], [r["text"] for r in val]
    assert sorted(train + val) == sorted(DOCS) and val and not set(train) & set(val)


def test_builtin_corpus_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _builtin_corpus.cache_clear()
    train, val = load_corpus(DataConfig())
    docs = texts(train) + texts(val)
    size = sum(len(d) for d in docs)
    assert 1_000_000 < size < 4_000_000 and len(docs) > 500
    assert any("assignment statement" in d.lower() for d in docs)  # a pydoc_data topic
    assert len(list(tmp_path.glob("unified_pretrain/builtin-corpus-*.json"))) == 1
    _builtin_corpus.cache_clear()  # now read back from the JSON cache
    assert train._fingerprint == load_corpus(DataConfig())[0]._fingerprint  # stable: the block cache is reused
    _builtin_corpus.cache_clear()


def test_docstring_lexer():
    src = ('"""Module doc."""\nx = """not a docstring:\n"""\ndef f(a,\n      b):  # c\n    # comment\n'
           '    r"""Function doc with \\n and "quotes"."""\n    s = "a\'b:"\nclass C:\n    \'\'\'Class doc.\'\'\'\n')
    assert list(_docstrings(src)) == ["Module doc.", 'Function doc with \\n and "quotes".', "Class doc."]


# ---- bad input: one line naming the file and the fix -----------------------------------------------------------
def one_line_error(cfg, match):
    with pytest.raises(UserError, match=match) as info:
        load_corpus(cfg)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_path_and_empty_glob(tmp_path):
    one_line_error(DataConfig(files=[str(tmp_path / "nope.txt")]), "nope.txt does not exist")
    one_line_error(DataConfig(files=[str(tmp_path / "*.txt")]), r"matches no file.*quote")
    (tmp_path / "data.bin").write_bytes(b"x")
    one_line_error(DataConfig(files=[str(tmp_path / "data.bin")]), "unsupported extension")


def test_empty_corpus(tmp_path):
    (tmp_path / "e.txt").write_text("\n\n   \n\n")
    one_line_error(DataConfig(files=[str(tmp_path / "e.txt")]), "holds no text")


def test_binary_and_non_utf8(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    one_line_error(DataConfig(files=[str(tmp_path / "b.txt")]), r"b.txt looks binary")
    (tmp_path / "l.txt").write_bytes("ok line\nsecond\ncaf\u00e9 latin1\n".encode("latin-1"))
    one_line_error(DataConfig(files=[str(tmp_path / "l.txt")]), r"l.txt:3: not UTF-8.*iconv")


def test_non_utf8_beyond_the_sniffed_head(tmp_path):
    (tmp_path / "late.txt").write_bytes(b"fine text\n" * 10_000 + b"bad \xff byte\n")
    one_line_error(DataConfig(files=[str(tmp_path / "late.txt")]), r"late.txt:10001: not UTF-8")


def test_bad_jsonl_lines(tmp_path):
    good = "".join(json.dumps({"text": d}) + "\n" for d in DOCS)
    (tmp_path / "a.jsonl").write_text(good[:60] + "{oops\n" + good)
    msg = one_line_error(DataConfig(files=[str(tmp_path / "a.jsonl")]), r"a.jsonl:\d+: not valid JSON")
    assert ":2:" in msg or ":3:" in msg
    (tmp_path / "late.jsonl").write_text(good * 5 + "not json at all\n")  # past the 100 sniffed lines
    one_line_error(DataConfig(files=[str(tmp_path / "late.jsonl")]), r"late.jsonl:201: not valid JSON")
    (tmp_path / "m.jsonl").write_text(good * 5 + json.dumps({"body": "x"}) + "\n")
    one_line_error(DataConfig(files=[str(tmp_path / "m.jsonl")]), r"m.jsonl:201: no string field 'text'.*"
                                                                     r"data.text_column")
    (tmp_path / "k.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    one_line_error(DataConfig(files=[str(tmp_path / "k.jsonl")]), r"k.jsonl:1: no string field 'text' "
                                                                     r"\(found: body\)")


def test_missing_column_csv_parquet(tmp_path):
    import pandas as pd

    pd.DataFrame({"body": DOCS}).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame({"body": DOCS}).to_parquet(tmp_path / "d.parquet")
    one_line_error(DataConfig(files=[str(tmp_path / "d.csv")]), r"d.csv: no column 'text'.*body")
    one_line_error(DataConfig(files=[str(tmp_path / "d.parquet")]), r"d.parquet: no column 'text'.*body")


def test_offline_hub_dataset_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    one_line_error(DataConfig(hub_dataset="nobody/no_such_dataset_xyz"), r"no_such_dataset_xyz.*HF_HUB_OFFLINE")
    assert time.time() - start < 30
