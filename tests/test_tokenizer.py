"""Tokenizer training (four kinds), special tokens per objective role, save/reload, loading and its errors."""
import time
import warnings

import numpy as np
import pytest
from transformers import AutoTokenizer

from pretrain.data import tokenizer as tokenizer_module
from pretrain.data.tokenizer import (SENTINELS, TokenizerConfig, _sample_texts, ensure_special_tokens, load_tokenizer,
                                     sample_indices, tokenizer_fingerprint, tokenizer_for, train_tokenizer)
from pretrain.errors import UserError

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()
TEXTS = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 12)) + f" number {i}." for i in range(120)]
ALL_ROLES = ("pad_token", "eos_token", "bos_token", "mask_token", "sentinels")


@pytest.mark.parametrize("kind,vocab,template", [
    ("wordpiece", 200, ("[CLS]", "[SEP]")), ("bpe", 300, ("<s>", "</s>")),
    ("unigram", 150, (None, "</s>")), ("char", 60, ("<s>", "</s>"))])
def test_train_save_reload(tmp_path, kind, vocab, template):
    tok = tokenizer_for(TokenizerConfig(kind=kind, vocab_size=vocab), TEXTS, ("pad_token", "eos_token"))
    tok.save_pretrained(tmp_path)
    assert tok.pad_token is not None and tok.eos_token is not None and tok.pad_token_id != tok.eos_token_id
    ids = tok("the lazy dog").input_ids
    first, last = template
    assert tok.convert_ids_to_tokens(ids[-1]) == last
    assert first is None or tok.convert_ids_to_tokens(ids[0]) == first
    assert tok("the lazy dog", add_special_tokens=False).input_ids == ids[1 if first else 0:-1]
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.special_tokens_map == tok.special_tokens_map and len(again) == len(tok)
    assert again("the lazy dog").input_ids == ids
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(tok)


def test_standard_tokens_of_each_kind():
    wp = train_tokenizer("wordpiece", 200, TEXTS, progress=False)
    assert wp.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (wp.bos_token, wp.eos_token, wp.cls_token, wp.sep_token, wp.mask_token) == \
        ("[CLS]", "[SEP]", "[CLS]", "[SEP]", "[MASK]")
    bpe = train_tokenizer("bpe", 300, TEXTS, progress=False)
    assert bpe.convert_ids_to_tokens(list(range(5))) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert bpe.decode(bpe("Quick, brown!\n  fox", add_special_tokens=False).input_ids) == "Quick, brown!\n  fox"
    uni = train_tokenizer("unigram", 150, TEXTS, progress=False)
    assert uni.convert_ids_to_tokens(list(range(3))) == ["<pad>", "</s>", "<unk>"] and uni.mask_token is None


def test_roles_are_reserved(tmp_path):
    tok = train_tokenizer("unigram", 150, TEXTS, roles=ALL_ROLES, progress=False)
    assert tok.mask_token == "<mask>" and tok.bos_token == "<s>"
    sentinel_ids = tok.convert_tokens_to_ids(list(SENTINELS))
    assert sentinel_ids == list(range(len(tok) - 100, len(tok)))  # appended at the end, <extra_id_0> first
    assert set(sentinel_ids) <= set(tok.all_special_ids)
    assert tok("x <extra_id_3> y", add_special_tokens=False).input_ids.count(sentinel_ids[3]) == 1
    tok.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is missing: no warning
        again = ensure_special_tokens(load_tokenizer(str(tmp_path)), ALL_ROLES)
    assert again.convert_tokens_to_ids("<extra_id_99>") == len(tok) - 1


def test_ensure_adds_missing_roles_with_a_warning():
    tok = train_tokenizer("unigram", 150, TEXTS, progress=False)
    n = len(tok)
    with pytest.warns(UserWarning, match="no mask_token; added the new token '<mask>'"):
        ensure_special_tokens(tok, ("pad_token", "eos_token", "mask_token"))
    assert tok.mask_token_id == n and len(tok) == n + 1
    with pytest.warns(UserWarning, match="sentinels"):
        ensure_special_tokens(tok, ("sentinels",))
    assert len(tok) == n + 101


def test_loaded_bert_style_tokenizer_gets_eos_from_sep(tmp_path):
    from transformers import PreTrainedTokenizerFast

    wp = train_tokenizer("wordpiece", 200, TEXTS, progress=False)
    bare = PreTrainedTokenizerFast(tokenizer_object=wp.backend_tokenizer, unk_token="[UNK]", sep_token="[SEP]",
                                   cls_token="[CLS]")
    bare.save_pretrained(tmp_path)
    with pytest.warns(UserWarning) as record:
        tok = load_tokenizer(str(tmp_path))
    messages = sorted(str(w.message) for w in record)
    assert messages[0].startswith("tokenizer had no eos_token; using its existing token '[SEP]'")
    assert messages[1].startswith("tokenizer had no pad_token; using its existing token '[PAD]'")
    assert tok.eos_token == "[SEP]" and tok.pad_token == "[PAD]" and len(tok) == len(wp)


def test_tokenizer_for_loads_a_path(tmp_path):
    train_tokenizer("bpe", 300, TEXTS, progress=False).save_pretrained(tmp_path)
    tok = tokenizer_for(TokenizerConfig(path=str(tmp_path)), None, ("mask_token",))
    assert tok.mask_token == "<mask>" and tok.eos_token == "</s>"


def test_max_documents_samples_deterministically():
    def sample(seed):  # (the trainers themselves break frequency ties in hash order, so compare the sample)
        batches, n = _sample_texts(TEXTS, 20, seed)
        return [t for b in batches for t in b], n
    docs, n = sample(1)
    assert n == 20 and len(docs) == 20 and set(docs) <= set(TEXTS)
    assert sample(1)[0] == docs and sample(2)[0] != docs


def test_the_document_sample_is_uniform_exact_and_small(monkeypatch):
    monkeypatch.setattr(tokenizer_module, "SAMPLE_CHUNK", 1000)
    n, k = 10_500, 3000
    draws = [sample_indices(n, k, seed) for seed in range(40)]
    for d in draws:
        assert len(d) == k and len(np.unique(d)) == k and d.min() >= 0 and d.max() < n and (np.diff(d) > 0).all()
    counts = np.bincount(np.concatenate(draws) // 1000, minlength=11)[:10]  # whole chunks: 1000 positions each
    expected = 40 * k / n * 1000
    assert np.abs(counts - expected).max() < 4 * expected ** 0.5  # every chunk its fair share, none favoured
    assert np.array_equal(sample_indices(n, k, 7), sample_indices(n, k, 7))
    assert len(sample_indices(n, n, 0)) == n and len(sample_indices(5, 0, 0)) == 0


def test_bad_tokenizer_input(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="vocab_size 100 is too small for a bpe"):
        train_tokenizer("bpe", 100, TEXTS, progress=False)
    with pytest.raises(UserError, match="kind 'sentencepiece' is unknown"):
        train_tokenizer("sentencepiece", 100, TEXTS, progress=False)
    with pytest.raises(UserError, match="no text to learn from"):
        train_tokenizer("wordpiece", 200, ["", ""], progress=False)
    with pytest.raises(UserError, match="tokenizer.path .*cannot load"):
        load_tokenizer(str(tmp_path / "missing"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        load_tokenizer("nobody/no-such-tokenizer-xyz")
    assert time.time() - start < 30


def test_slow_tokenizer_cannot_get_tokens():
    class Slow:
        name_or_path = "slow"
    with pytest.raises(UserError, match="not a fast tokenizer"):
        ensure_special_tokens(Slow(), ("mask_token",))
