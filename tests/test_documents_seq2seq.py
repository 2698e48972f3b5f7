"""Document masking for span corruption (T5) and text infilling (BART): each packed document is corrupted as its own
example (t5x's packed examples), its encoder and decoder tokens carry its segment id, and no loss of one document
depends on another. documents=False batches are frozen: they must not move."""
import hashlib
import math
import random

import pytest
import torch
import torch.nn.functional as F
from objectives_fixtures import (SENTINELS, bpe, merge_by_sentinel, model_config, padded_blocks, text_blocks,
                                 tiny_model, unigram)

from objectives import build_objective
from objectives.base import model_inputs
from objectives.span import corrupted_lengths, span_counts

KEYS = ("input_ids", "attention_mask", "decoder_input_ids", "segment_ids", "decoder_segment_ids")
SIZES = [0, 1, 1, 2, 3, 5, 8, 13, 20, 30]  # document lengths in tokens: empty and one-token documents included


def ordinary_ids(tok):
    special = set(tok.all_special_ids)
    return [v for v in range(len(tok)) if v not in special]


def document_blocks(tok, batch, length, seed, sizes=SIZES, real=None):
    """Packed blocks cut from a stream of documents of random lengths, each followed by EOS (a block may begin
    and end inside a document). `real`: the last row keeps that many tokens, then padding (data.tail pad)."""
    rng = random.Random(seed)
    ordinary, stream = ordinary_ids(tok), []
    while len(stream) < batch * length:
        stream += [rng.choice(ordinary) for _ in range(rng.choice(sizes))] + [tok.eos_token_id]
    blocks = torch.tensor(stream[:batch * length]).view(batch, length)
    if real is not None:
        blocks[-1, real:] = tok.pad_token_id
    return blocks


def documents(row, eos, pad):
    """The texts of a row's documents (without their EOS; a lone EOS has none and is no document), read off the
    row independently of the objectives."""
    row = list(row)
    while row and row[-1] == pad:
        row.pop()
    docs, current = [], []
    for t in row:
        if t == eos:
            if current:
                docs.append(current)
            current = []
        else:
            current.append(t)
    if current:
        docs.append(current)
    return docs


def segment(values, segments, k):
    return values[segments == k].tolist()


def document_segments(batch, row, docs):
    """[(encoder tokens, target tokens)] of each document segment of a row, checked by check_segment_ids."""
    K = check_segment_ids(batch, row)
    assert 1 <= K <= len(docs)
    return [(segment(batch["input_ids"][row], batch["segment_ids"][row], k),
             segment(batch["labels"][row], batch["decoder_segment_ids"][row], k)) for k in range(K)]


def check_segment_ids(batch, row):
    """Both sides number the same documents 0, 1, ..., K-1 in order, padding (-1) only at the end; returns K."""
    counts = []
    for key in ("segment_ids", "decoder_segment_ids"):
        s = batch[key][row].tolist()
        real = [v for v in s if v >= 0]
        assert s == real + [-1] * (len(s) - len(real)), (key, s)
        assert real == sorted(real) and sorted(set(real)) == list(range(len(set(real)))), (key, s)
        counts.append(len(set(real)))
    assert counts[0] == counts[1]                      # every decoder segment has encoder tokens, and back
    if "attention_mask" in batch:
        assert torch.equal(batch["attention_mask"][row].bool(), batch["segment_ids"][row] >= 0)
    else:
        assert (batch["segment_ids"][row] >= 0).all()
    return counts[0]


def check_decoder_shift(batch, start_id, pad_id):
    """decoder_input_ids: the decoder start token at the first position of every segment, the previous label
    elsewhere (t5x's per-segment shift), pad on padding."""
    seg, labels, previous = batch["decoder_segment_ids"], batch["labels"], batch["decoder_input_ids"]
    first = torch.ones_like(seg, dtype=torch.bool)
    first[:, 1:] = seg[:, 1:] != seg[:, :-1]
    real = seg >= 0
    assert torch.equal(labels == -100, ~real)
    assert (previous[first & real] == start_id).all()
    inside = ~first & real
    assert torch.equal(previous[:, 1:][inside[:, 1:]], labels[:, :-1][inside[:, 1:]])
    assert (previous[~real] == pad_id).all()


# ---- span corruption ---------------------------------------------------------------------------------------------
def span_objective(**options):
    tok = unigram()
    return tok, build_objective("span", tok, model_config("t5", tok, max_seq_len=512), documents=True, **options)


def span_input_length(n, density=0.15, mean=3.0):
    return corrupted_lengths(n, density, mean)[0] if n >= 2 else n + 1


def uncorrupt(inputs, targets, sentinels):
    """One document's text from its inputs and targets: each sentinel of the inputs replaced by the span behind the
    same sentinel in the targets. Checks the sentinels: <extra_id_0>, <extra_id_1>, ... in order on both sides."""
    assert inputs[-1] == targets[-1] and targets.count(targets[-1]) == 1
    index = {s: k for k, s in enumerate(sentinels)}
    in_sentinels = [t for t in inputs if t in index]
    assert in_sentinels == sentinels[:len(in_sentinels)]
    assert [t for t in targets if t in index] == in_sentinels
    assert not in_sentinels or targets[0] == sentinels[0], "a target must begin with <extra_id_0>"
    assert all(a not in index or (b not in index and b != targets[-1]) for a, b in zip(targets, targets[1:])), \
        "every sentinel stands for a non-empty span"
    return merge_by_sentinel(inputs, targets, sentinels), len(in_sentinels)


def check_span_row(tok, obj, blocks, batch, row, seq_len):
    """Segment k rebuilds document k of the row exactly (the last kept one may be cut short, later ones dropped,
    only when they do not fit); returns [(text length, noise tokens, spans)] of its corrupted documents."""
    sentinels = [tok.convert_tokens_to_ids(s) for s in SENTINELS]
    docs = documents(blocks[row].tolist(), tok.eos_token_id, tok.pad_token_id)
    pieces = document_segments(batch, row, docs)
    K, stats = len(pieces), []
    for k, (inputs, targets) in enumerate(pieces):
        assert set(inputs) <= set(docs[k]) | set(sentinels) | {tok.eos_token_id}
        assert set(targets) <= set(docs[k]) | set(sentinels) | {tok.eos_token_id}
        text, spans = uncorrupt(inputs, targets, sentinels)
        if k < K - 1:
            assert text == docs[k], (row, k)
        else:
            assert text == docs[k][:len(text)] and (len(text) >= 1 or not docs[k]), (row, k)
        n = len(text)
        if n >= 2:                                     # T5's per-example arithmetic, on this document's length
            noise, count = span_counts(n, 0.15, 3.0)
            assert spans == count and len(targets) == noise + spans + 1 and len(inputs) == span_input_length(n)
            stats.append((n, noise, spans, targets))
        else:                                          # nothing to corrupt
            assert spans == 0 and targets == [tok.eos_token_id] and inputs == docs[k][:n] + [tok.eos_token_id]
    kept = sum(span_input_length(len(d)) for d in docs[:K - 1])
    if len(text) < len(docs[K - 1]):                   # shortened only because it did not fit, to the longest fit
        assert kept + span_input_length(len(docs[K - 1])) > seq_len
        assert kept + span_input_length(len(text) + 1) > seq_len
    elif K < len(docs):                                # dropped only because not even one more token fits
        assert kept + span_input_length(len(text)) + span_input_length(min(len(docs[K]), 1)) > seq_len
    assert int((batch["segment_ids"][row] >= 0).sum()) <= seq_len
    return stats


@pytest.mark.parametrize("seed", range(4))
def test_span_corrupts_every_document_on_its_own(seed):
    tok, obj = span_objective()
    length = obj.block_length(64)
    seq_len = corrupted_lengths(length, 0.15, 3.0)[0]
    plain = build_objective("span", tok, model_config("t5", tok))
    for real in (None, 25):                            # full blocks, and a corpus's last block with padding
        blocks = document_blocks(tok, 6, length, seed, real=real)
        batch = obj.collate(blocks, torch.Generator().manual_seed(seed))
        assert set(batch) <= set(KEYS) | {"labels"} and {"segment_ids", "decoder_segment_ids"} <= set(batch)
        # the encoder is exactly as wide as without documents
        assert batch["input_ids"].shape[1] == seq_len == plain.collate(
            document_blocks(tok, 6, length, seed), torch.Generator())["input_ids"].shape[1]
        assert batch["labels"].shape[1] == int((batch["decoder_segment_ids"] >= 0).sum(1).max())
        assert (batch["input_ids"][batch["segment_ids"] < 0] == tok.pad_token_id).all()
        check_decoder_shift(batch, obj.decoder_start_id, tok.pad_token_id)
        for row in range(6):
            check_span_row(tok, obj, blocks, batch, row, seq_len)


def test_span_shortens_only_the_last_documents_when_short_documents_overflow():
    """One-token documents are not corrupted, so a row of them would not fit the encoder: the last ones go."""
    tok, obj = span_objective()
    length = obj.block_length(64)
    seq_len = corrupted_lengths(length, 0.15, 3.0)[0]
    blocks = document_blocks(tok, 4, length, 0, sizes=[1, 1, 2, 40])
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape[1] == seq_len
    cut = 0
    for row in range(4):
        check_span_row(tok, obj, blocks, batch, row, seq_len)
        docs = documents(blocks[row].tolist(), tok.eos_token_id, tok.pad_token_id)
        cut += check_segment_ids(batch, row) < len(docs) or sum(span_input_length(len(d)) for d in docs) > seq_len
    assert cut > 0                                     # the case was exercised


def test_span_statistics_per_document():
    """Over many long documents: 15% of the tokens are noise, in spans of about 3 tokens."""
    tok, obj = span_objective()
    length = obj.block_length(256)
    blocks = document_blocks(tok, 24, length, 1, sizes=[60, 80, 100, 120, 150])
    batch = obj.collate(blocks, torch.Generator().manual_seed(1))
    sentinels = set(tok.convert_tokens_to_ids(s) for s in SENTINELS)
    tokens = noise = 0
    span_lengths = []
    for row in range(24):
        for n, k_noise, _, targets in check_span_row(tok, obj, blocks, batch, row, batch["input_ids"].shape[1]):
            tokens, noise = tokens + n, noise + k_noise
            run = None
            for t in targets[:-1]:
                if t in sentinels:
                    if run:
                        span_lengths.append(run)
                    run = 0
                else:
                    run += 1
            span_lengths.append(run)
    assert abs(noise / tokens - 0.15) < 0.01
    assert abs(sum(span_lengths) / len(span_lengths) - 3.0) < 0.3
    assert len(set(span_lengths)) > 3                  # spans vary in length


# ---- text infilling ----------------------------------------------------------------------------------------------
def infill_objective(**options):
    tok = bpe()
    return tok, build_objective("infill", tok, model_config("bart", tok), documents=True, **options)


def check_infill_row(tok, blocks, batch, row, length):
    """Label segment k is <s> document k </s> (the last kept one may be cut short, later ones dropped, only when
    the labels would be wider than length + 2); returns [(document text, its encoder input)]."""
    docs = documents(blocks[row].tolist(), tok.eos_token_id, tok.pad_token_id)
    pieces = document_segments(batch, row, docs)
    K, out = len(pieces), []
    for k, (inputs, labels) in enumerate(pieces):
        assert labels[0] == inputs[0] == tok.bos_token_id and labels[-1] == inputs[-1] == tok.eos_token_id
        text = labels[1:-1]
        if k < K - 1:
            assert text == docs[k], (row, k)
        else:
            assert text == docs[k][:len(text)] and (len(text) >= 1 or not docs[k]), (row, k)
        assert set(inputs[1:-1]) <= set(docs[k]) | set(ordinary_ids(tok)) | {tok.mask_token_id}
        out.append((text, inputs[1:-1]))
    kept = sum(len(d) + 2 for d in docs[:K - 1])
    if len(text) < len(docs[K - 1]):                   # shortened only because it did not fit, to the longest fit
        assert kept + len(docs[K - 1]) + 2 > length + 2 and kept + len(text) + 3 > length + 2
    elif K < len(docs):                                # dropped only because not even one more token fits
        assert kept + len(text) + 2 + min(len(docs[K]), 1) + 2 > length + 2
    assert int((batch["decoder_segment_ids"][row] >= 0).sum()) <= length + 2
    return out


def is_subsequence(short, long):
    it = iter(long)
    return all(t in it for t in short)


@pytest.mark.parametrize("seed", range(3))
def test_infill_frames_and_noises_every_document_on_its_own(seed):
    tok, obj = infill_objective(random_ratio=0.0)
    length = obj.block_length(64)
    for real in (None, 30):
        blocks = document_blocks(tok, 6, length, seed, real=real)
        batch = obj.collate(blocks, torch.Generator().manual_seed(seed))
        assert {"segment_ids", "decoder_segment_ids"} <= set(batch)
        assert batch["labels"].shape[1] <= length + 2                # never wider than without documents
        check_decoder_shift(batch, obj.decoder_start_id, tok.pad_token_id)
        assert (batch["decoder_input_ids"][batch["decoder_segment_ids"] >= 0] != -100).all()
        for row in range(6):
            for text, noised in check_infill_row(tok, blocks, batch, row, length):
                kept = [t for t in noised if t != tok.mask_token_id]
                assert is_subsequence(kept, text)                     # the unmasked tokens of this document only
                if len(text) >= 4:
                    assert tok.mask_token_id in noised


def test_infill_masks_the_mask_ratio_of_every_document():
    """Token spans (whole_word off, no random replacements): each document loses exactly ceil(0.3 n) tokens,
    counted on its own length -- a row noised as one text and then split would miss it."""
    tok, obj = infill_objective(whole_word=False, random_ratio=0.0)
    length = obj.block_length(128)
    blocks = document_blocks(tok, 8, length, 5)
    batch = obj.collate(blocks, torch.Generator().manual_seed(5))
    checked = 0
    for row in range(8):
        for text, noised in check_infill_row(tok, blocks, batch, row, length):
            kept = [t for t in noised if t != tok.mask_token_id]
            assert len(kept) == len(text) - math.ceil(0.3 * len(text)), (row, text, noised)
            checked += len(text) >= 2
    assert checked >= 16


def test_infill_masks_about_thirty_percent_of_words_of_real_text():
    tok, obj = infill_objective(random_ratio=0.0)
    length = obj.block_length(128)
    blocks = text_blocks(tok, 16, length)
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    masked = total = 0
    for row in range(16):
        for text, noised in check_infill_row(tok, blocks, batch, row, length):
            masked += len(text) - sum(t != tok.mask_token_id for t in noised)
            total += len(text)
    assert 0.22 < masked / total < 0.4                 # tokens of 30% of the words


def test_infill_permutes_sentences_inside_each_document():
    tok, obj = infill_objective(permute_sentences=True, mask_ratio=0.0)
    length = obj.block_length(64)
    blocks = text_blocks(tok, 8, length)               # documents of two or three sentences each
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    moved = 0
    for row in range(8):
        for text, noised in check_infill_row(tok, blocks, batch, row, length):
            assert sorted(noised) == sorted(text)       # this document's tokens, no other's
            moved += noised != text
    assert moved > 0


def test_infill_shortens_only_the_last_documents_when_framing_overflows():
    tok, obj = infill_objective()
    length = obj.block_length(64)
    blocks = document_blocks(tok, 4, length, 2, sizes=[1, 1, 2])  # many documents: framing adds many tokens
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    assert batch["labels"].shape[1] == length + 2
    for row in range(4):
        docs = documents(blocks[row].tolist(), tok.eos_token_id, tok.pad_token_id)
        assert sum(len(d) + 2 for d in docs) > length + 2  # the case is exercised in every row
        check_infill_row(tok, blocks, batch, row, length)


# ---- documents=False: the batches of before, bit for bit ---------------------------------------------------------
def digest(batch):
    h = hashlib.sha256()
    for key in sorted(batch):
        value = batch[key].long().contiguous()
        h.update(f"{key}{tuple(value.shape)}".encode())
        h.update(value.numpy().tobytes())
    return h.hexdigest()[:16]


def synthetic_unigram_blocks(batch, length, seed):
    """Ids that do not depend on how unigram() trained (its special ids are fixed, its pieces are not)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(103, 200, (batch, length), generator=g)
    return ids.masked_fill(torch.rand(batch, length, generator=g) < 0.05, 1)


def test_without_documents_batches_are_unchanged():
    """Digests computed with the code before documents existed (same blocks, same seeds)."""
    tok = unigram()
    assert (tok.pad_token_id, tok.eos_token_id, tok.convert_tokens_to_ids("<extra_id_0>")) == (0, 1, 3)
    span = build_objective("span", tok, model_config("t5", tok))
    blocks = synthetic_unigram_blocks(4, span.block_length(64), 0)
    padded = blocks.clone()
    padded[-1, 30:] = tok.pad_token_id
    assert digest(span.collate(blocks, torch.Generator().manual_seed(7))) == "5791b74b9f7ebfe4"
    assert digest(span.collate(padded, torch.Generator().manual_seed(7))) == "6c86e947535e3f04"
    b = bpe()
    infill = build_objective("infill", b, model_config("bart", b))
    length = infill.block_length(64)
    assert digest(infill.collate(text_blocks(b, 4, length), torch.Generator().manual_seed(7))) == "c1ea4f90ce08b6bf"
    assert digest(infill.collate(padded_blocks(b, 4, length, 30), torch.Generator().manual_seed(7))) == \
        "38ec8378de4f4a24"
    permuted = build_objective("infill", b, model_config("bart", b), permute_sentences=True)
    assert digest(permuted.collate(text_blocks(b, 4, length), torch.Generator().manual_seed(7))) == \
        "d07430662cccb4a0"


# ---- the model: no loss of one document depends on another -------------------------------------------------------
def token_losses(model, batch):
    with torch.no_grad():
        hidden = model(**model_inputs(batch, *KEYS))
        logits = model.logits(hidden)
    return F.cross_entropy(logits.transpose(1, 2), batch["labels"], ignore_index=-100, reduction="none")


@pytest.mark.parametrize("name,preset,options", [("span", "t5", {}), ("infill", "bart", {"whole_word": False})])
def test_changing_a_document_moves_no_loss_of_another(name, preset, options, one_thread):
    tok = unigram() if name == "span" else bpe()
    obj = build_objective(name, tok, model_config(preset, tok), documents=True, **options)
    model = tiny_model(preset, tok).eval()
    length = obj.block_length(64)
    ordinary = ordinary_ids(tok)
    rng = random.Random(0)
    docs = [[rng.choice(ordinary) for _ in range(n)] for n in (14, 16, 9)]
    stream = docs[0] + [tok.eos_token_id] + docs[1] + [tok.eos_token_id] + docs[2] + [tok.eos_token_id]
    stream += [rng.choice(ordinary) for _ in range(length - len(stream))]   # a fourth document, cut by the block
    blocks = torch.tensor([stream, stream[::-1][1:] + [tok.eos_token_id]])  # row 1: other documents
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    base = token_losses(model, batch)
    loss, _ = obj.loss(model, batch)                   # the objective's loss reads the segment ids too
    assert torch.allclose(loss, base[batch["labels"] != -100].mean(), atol=1e-5)
    unsegmented = {k: v for k, v in batch.items() if k not in ("segment_ids", "decoder_segment_ids")}
    assert not torch.allclose(token_losses(model, unsegmented)[0][batch["decoder_segment_ids"][0] == 1],
                              base[0][batch["decoder_segment_ids"][0] == 1], atol=1e-4)  # the check can fail
    own = batch["decoder_segment_ids"][0] == 0
    other = batch["decoder_segment_ids"] >= 0
    other[0] &= ~own
    for p in range(len(docs[0])):
        changed = blocks.clone()
        changed[0, p] = ordinary[(ordinary.index(int(changed[0, p])) + 1) % len(ordinary)]
        batch2 = obj.collate(changed, torch.Generator().manual_seed(0))  # the same draws: only document 0 moves
        for key in ("segment_ids", "decoder_segment_ids"):
            assert torch.equal(batch2[key], batch[key])
        losses = token_losses(model, batch2)
        assert torch.allclose(losses[other], base[other], atol=1e-6), (name, p)
        assert (losses[0][own] - base[0][own]).abs().max() > 1e-4, (name, p)
