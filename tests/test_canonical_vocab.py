"""A trained Unigram's rescoring (canonical_vocab.rescored_unigram) must not depend on what the trainer leaves to
hash order: float noise in the scores and the order of (near-)equal scores."""
import collections
import json
import math
import random

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from pretrain.data.canonical_vocab import rescored_unigram

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()
TEXTS = [" ".join(WORDS[(i * k + i // 7) % len(WORDS)] for k in range(1, 9)) + f" item {i * 37 % 101}."
         for i in range(300)]
SPECIAL = ["<pad>", "</s>", "<unk>"]


def raw_unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(TEXTS, trainers.UnigramTrainer(vocab_size=150, special_tokens=SPECIAL, unk_token="<unk>",
                                                           show_progress=False))
    return tok


def as_another_process_might(tok: Tokenizer, seed: int) -> Tokenizer:
    """The same model with the trainer's hash-order effects redrawn: scores off by ~1e-9 (relative; EM's own
    noise is ~1e-11), then sorted by score (as the trainer sorts) with equal scores in another order."""
    rng = random.Random(seed)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    body = [[piece, score * (1 + rng.uniform(-1e-9, 1e-9))] for piece, score in vocab[len(SPECIAL):]]
    rng.shuffle(body)
    body.sort(key=lambda p: -p[1])
    data["model"]["vocab"] = vocab[:len(SPECIAL)] + body
    return Tokenizer.from_str(json.dumps(data))


def test_rescoring_is_canonical_and_counts_the_viterbi_segmentation():
    tok = raw_unigram()
    variants = [as_another_process_might(tok, seed) for seed in range(4)]
    assert len({v.to_str() for v in variants}) == 4  # the inputs do differ
    rescored = [rescored_unigram(v, [TEXTS[:100], TEXTS[100:]], len(SPECIAL)).to_str() for v in variants]
    assert len(set(rescored)) == 1

    # reference: each piece's share of the trained model's own segmentation, counted here with a Counter
    counts = collections.Counter(t for text in TEXTS for t in tok.encode(text, add_special_tokens=False).tokens)
    total = sum(counts.values())
    vocab = json.loads(rescored[0])["model"]["vocab"]
    assert [p for p, _ in vocab[:len(SPECIAL)]] == SPECIAL
    pieces = vocab[len(SPECIAL):]
    assert sorted(p for p, _ in pieces) == sorted(p for p, _ in json.loads(tok.to_str())["model"]["vocab"][3:])
    for piece, score in pieces:
        assert math.isclose(score, math.log(counts.get(piece, 0.5) / total), rel_tol=1e-12), piece
    assert [(-s, p) for p, s in pieces] == sorted((-s, p) for p, s in pieces)
