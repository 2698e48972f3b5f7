"""The end-of-run samples (pretrain/inspect/sample.py) show decoded text, never a vocabulary's internal symbols
(byte-level BPE's Ġ and Ċ, Metaspace's ▁), and say in words when a sample decodes to nothing visible."""
from types import SimpleNamespace

import pytest
import torch

from pretrain.data.tokenizer import train_tokenizer
from pretrain.inspect.sample import (
    continue_text,
    fill_mask,
    reconstruct,
    sample,
    sentence_window,
    token_text,
)

TEXTS = ["the cat sat on the mat.\nthe dog ran to the door.\n",
         "a bird sings in the tree\n\nand the farmer walks home\n",
         "running and jumping, the children play in the garden."] * 10
MARKERS = ("Ġ", "Ċ", "▁")


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("bpe", 320, TEXTS, ("mask_token",), progress=False)


@pytest.fixture(scope="module")
def unigram():
    return train_tokenizer("unigram", 120, TEXTS, ("mask_token",), progress=False)


def piece(tokenizer, text: str, raw: str) -> int:
    """The id of the last token of `text`, checked to be the vocabulary string `raw` (so the test means something)."""
    token_id = tokenizer(text, add_special_tokens=False)["input_ids"][-1]
    assert tokenizer.convert_ids_to_tokens(token_id) == raw
    return token_id


class Stub(torch.nn.Module):
    """A model whose logits always rank `favourites` first, in order: the formatting is what is under test."""

    def __init__(self, arch: str, vocab_size: int, favourites: list[int]):
        super().__init__()
        self.config = SimpleNamespace(arch=arch, max_seq_len=64, head_outputs=0)
        self.vocab_size, self.favourites = vocab_size, favourites
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        self.seen = ids  # what the model was shown (the masked input of a fill-mask)
        return torch.zeros(*ids.shape, 4)

    def encode(self, ids):
        return self(ids)

    def decode(self, ids, enc):
        return self(ids)

    def logits(self, hidden):
        out = torch.full((*hidden.shape[:-1], self.vocab_size), -20.0)
        for rank, token_id in enumerate(self.favourites):
            out[..., token_id] = 10.0 - rank
        return out


def test_byte_level_tokens_read_as_text(bpe):
    newline, the = piece(bpe, "a\n", "Ċ"), piece(bpe, "a the", "Ġthe")
    assert token_text(bpe, newline) == "\n" and token_text(bpe, the) == " the"
    assert token_text(bpe, piece(bpe, "the", "the")) == "the"  # a word at the start of a line: no space
    assert token_text(bpe, bpe.eos_token_id) == "</s>"


def test_byte_level_piece_of_a_character_shows_its_bytes():
    tok = train_tokenizer("bpe", 300, TEXTS + ["naïve 日本 text"] * 3, progress=False)
    shown = [token_text(tok, i) for i in tok(" 日本", add_special_tokens=False)["input_ids"]]
    assert not any("\ufffd" in s or any(m in s for m in MARKERS) for s in shown), shown
    assert "".join(shown) == " 日本" or "<0x" in "".join(shown), shown


def test_fill_mask_candidates_are_decoded_text(bpe):
    newline, the = piece(bpe, "a\n", "Ċ"), piece(bpe, "a the", "Ġthe")
    ids = torch.tensor(bpe("the cat sat on the mat and the dog ran to the door")["input_ids"])
    out = fill_mask(Stub("encoder", len(bpe), [newline, the]), bpe, ids)
    assert "'\\n' " in out and "' the' " in out
    assert not any(m in out for m in MARKERS), out
    assert "(was ' " in out  # the masked word as text too


def test_sample_entry_point_shows_text(bpe):
    """What train/main.py and compare/report.py call: sample(model, tokenizer, objective, blocks)."""
    blocks = torch.tensor([bpe("the cat sat on the mat.\nthe dog ran to the door.")["input_ids"][:16]])
    model = Stub("encoder", len(bpe), [piece(bpe, "a\n", "Ċ"), piece(bpe, "a the", "Ġthe")])
    out = sample(model, bpe, objective=None, val_blocks=blocks)
    assert out.startswith("fill-mask:") and "'\\n'" in out and not any(m in out for m in MARKERS), out


def test_unigram_metaspace_pieces_read_as_text(unigram):
    words = [t for t in unigram.get_vocab() if t.startswith("▁") and t[1:].isalpha()]  # word-start pieces: ▁ca
    assert words
    for t in words:  # decoding one alone would drop its word-start space: 'ca'
        assert token_text(unigram, unigram.convert_tokens_to_ids(t)) == " " + t[1:]
    space, word = unigram.convert_tokens_to_ids("▁"), unigram.convert_tokens_to_ids(words[0])
    assert token_text(unigram, space) == " " and token_text(unigram, piece(unigram, "a\n", "\n")) == "\n"
    ids = torch.tensor(unigram("the cat sat on the mat and the dog ran to the door")["input_ids"])
    out = fill_mask(Stub("encoder", len(unigram), [word, space]), unigram, ids)
    assert f"{' ' + words[0][1:]!r} " in out and "' ' " in out and not any(m in out for m in MARKERS), out


def test_wordpiece_continuation_pieces_read_as_text():
    wp = train_tokenizer("wordpiece", 120, TEXTS, progress=False)
    ids = wp("the doors", add_special_tokens=False)["input_ids"]
    tokens = wp.convert_ids_to_tokens(ids)
    assert tokens[0] == "the" and any(t.startswith("##") for t in tokens[1:])
    shown = [token_text(wp, i) for i in ids]
    assert shown[0] == " the" and "".join(shown) == " the doors" and not any("#" in s for s in shown)


def test_continuation_is_text_and_an_empty_one_says_so(bpe):
    prompt = torch.tensor(bpe("the cat sat on the mat")["input_ids"][:-1])
    the = piece(bpe, "a the", "Ġthe")
    out = continue_text(Stub("decoder", len(bpe), [the]), bpe, prompt, new_tokens=3)
    assert out.splitlines()[1].split(":", 1)[1].strip() == "the the the"
    only_eos = continue_text(Stub("decoder", len(bpe), [bpe.eos_token_id]), bpe, prompt)
    assert "(empty: the model produced only </s>)" in only_eos
    newlines = continue_text(Stub("decoder", len(bpe), [piece(bpe, "a\n", "Ċ")]), bpe, prompt, new_tokens=5)
    assert "(empty: the model produced only '\\n' x5)" in newlines and "Ċ" not in newlines


def test_reconstruction_that_stops_at_once_says_so(unigram):
    src = torch.tensor([unigram("the cat sat on the mat")["input_ids"]])
    batch = {"input_ids": src, "attention_mask": torch.ones_like(src),
             "decoder_input_ids": torch.tensor([[unigram.pad_token_id, 5]]), "labels": torch.tensor([[5, -100]])}
    out = reconstruct(Stub("encoder-decoder", len(unigram), [unigram.eos_token_id]), unigram, batch, max_new=8)
    assert out.splitlines()[2].endswith("(empty: the model produced only </s>)"), out
    assert "the cat sat" in out.splitlines()[0]


# ---- the closing samples of a briefly trained model still show something -----------------------------------------
def masked_positions(tokenizer, ids: torch.Tensor, seed: int) -> set:
    """The positions fill_mask hid: those the model was shown as [MASK]."""
    model = Stub("encoder", len(tokenizer), [5])
    fill_mask(model, tokenizer, ids, seed=seed)
    return {i for i, t in enumerate(model.seen[0].tolist()) if t == tokenizer.mask_token_id}


def test_fill_mask_hides_whole_words_at_seeded_positions():
    wp = train_tokenizer("wordpiece", 120, TEXTS, progress=False)
    enc = wp("the children playing in the gardens and the farmers walked home and a bird sings in the tree")
    ids, words = torch.tensor(enc["input_ids"]), enc.word_ids()  # word_ids: the tokenizer's own word segmentation
    assert len({w for w in words if w is not None}) < len(words) - 2  # some words are several pieces
    picks = []
    for seed in range(6):
        hidden = masked_positions(wp, ids, seed)
        assert hidden and 0 not in hidden and len(ids) - 1 not in hidden
        for w in {words[i] for i in hidden}:  # every piece of a touched word is hidden, nothing else of it kept
            assert {i for i, x in enumerate(words) if x == w} <= hidden, (seed, w)
        picks.append(frozenset(hidden))
    assert masked_positions(wp, ids, 0) == picks[0] and len(set(picks)) > 2  # seeded: reproducible, and varied


def test_sentence_window_starts_and_ends_at_sentence_boundaries(bpe):
    row = torch.tensor(bpe("ning of it. the dog ran to the door. a bird sings in the tree",
                           add_special_tokens=False)["input_ids"])
    window = sentence_window(bpe, row, length=10)  # reaches into the next sentence: cut after the full stop
    assert bpe.decode(window) == " the dog ran to the door."
    assert bpe.decode(sentence_window(bpe, row, length=100)) == " the dog ran to the door. a bird sings in the tree"


def test_sampled_continuation_shows_words_where_greedy_shows_only_newlines(bpe):
    prompt = torch.tensor(bpe("the cat sat on the mat")["input_ids"][:-1])
    newline, the, cat = piece(bpe, "a\n", "Ċ"), piece(bpe, "a the", "Ġthe"), piece(bpe, "a cat", "Ġcat")
    model = Stub("decoder", len(bpe), [newline, the, cat])  # '\n' likeliest (p 0.67) at every step
    out = continue_text(model, bpe, prompt, seed=0)
    text = out.splitlines()[1].split(":", 1)[1]
    assert "empty" not in text and ("the" in text or "cat" in text), out
    assert continue_text(model, bpe, prompt, seed=0) == out and continue_text(model, bpe, prompt, seed=1) != out


def test_reconstruction_holds_back_the_end_and_never_outputs_pad(unigram):
    src = torch.tensor([unigram("the cat sat on the mat")["input_ids"]])
    batch = {"input_ids": src, "attention_mask": torch.ones_like(src),
             "decoder_input_ids": torch.tensor([[unigram.pad_token_id, 5]]), "labels": torch.tensor([[5, -100]])}
    word = piece(unigram, "a cat", "at")
    stop_first = Stub("encoder-decoder", len(unigram), [unigram.eos_token_id, word])
    assert "only </s>" in reconstruct(stop_first, unigram, batch, max_new=8)
    held = reconstruct(stop_first, unigram, batch, max_new=8, min_new=3).splitlines()[2]
    assert held.endswith("atatat") or "at" in held and "empty" not in held, held
    pad_first = Stub("encoder-decoder", len(unigram), [unigram.pad_token_id, word, unigram.eos_token_id])
    assert "at" in reconstruct(pad_first, unigram, batch, max_new=3).splitlines()[2]


def test_sampled_reconstruction_shows_words_where_greedy_shows_only_spaces(unigram):
    """A briefly trained span-corruption decoder likes a bare space after each sentinel: greedy shows no words,
    the seeded top-k sample does, and the same seed gives the same sample."""
    src = torch.tensor([unigram("the cat sat on the mat")["input_ids"]])
    batch = {"input_ids": src, "attention_mask": torch.ones_like(src),
             "decoder_input_ids": torch.tensor([[unigram.pad_token_id, 5]]), "labels": torch.tensor([[5, -100]])}
    space, word = unigram.convert_tokens_to_ids("▁"), piece(unigram, "a cat", "at")
    assert space != unigram.unk_token_id
    model = Stub("encoder-decoder", len(unigram), [space, word])  # the space likeliest (p 0.73) at every step
    line = lambda out: out.splitlines()[2].split(":", 1)[1]  # noqa: E731
    assert "at" not in line(reconstruct(model, unigram, batch, max_new=8))
    sampled = reconstruct(model, unigram, batch, max_new=8, top_k=2, seed=0)
    assert "at" in line(sampled), sampled
    assert reconstruct(model, unigram, batch, max_new=8, top_k=2, seed=0) == sampled
