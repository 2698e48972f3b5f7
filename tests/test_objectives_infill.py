"""Text infilling: 30% masked in Poisson spans, one mask per span, unmasked text kept in order, target = original."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from objectives_fixtures import bpe, model_config, random_blocks, text_blocks, tiny_model, train_steps

from objectives import build_objective
from objectives.words import word_start_table, word_starts
from objectives.infill import infill_noise, permutation_of_sentences, sentence_end_table

MASK = -1  # mask id used by the direct infill_noise tests (never a real token there)


def noise(content, starts, generator, mask_ratio=0.3, random_ratio=0.0, lam=3.0):
    return infill_noise(content, starts, mask_ratio, lam, random_ratio, MASK,
                        lambda n: torch.full((n,), -2), generator)


def test_masked_fraction_is_the_mask_ratio():
    tok = bpe()
    blocks = text_blocks(tok, 200, 254)  # real text: many words of several tokens
    table = word_start_table(tok)
    special = torch.isin(blocks, torch.tensor(tok.all_special_ids))
    g = torch.Generator().manual_seed(0)
    fractions = [noise(row, word_starts(row, table, sp), g)[1].float().mean().item()
                 for row, sp in zip(blocks, special)]
    assert abs(sum(fractions) / len(fractions) - 0.30) < 0.03


def test_span_lengths_follow_the_poisson_mean():
    g = torch.Generator().manual_seed(0)
    content = torch.arange(3000)
    lengths = torch.cat([noise(content, torch.ones(3000, dtype=torch.bool), g, lam=lam)[2]
                         for lam in [3.0] * 20]).float()
    assert abs(lengths.mean().item() - 3.0) < 0.1
    assert abs((lengths == 0).float().mean().item() - math.exp(-3)) < 0.015  # zero-length spans: insertions


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 200), start_rate=st.floats(0.2, 1.0),
       mask_ratio=st.floats(0.0, 0.9), lam=st.floats(0.5, 6.0))
def test_removing_masks_recovers_unmasked_tokens_in_order(seed, n, start_rate, mask_ratio, lam):
    g = torch.Generator().manual_seed(seed)
    content = torch.arange(n)
    starts = torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)) < start_rate
    noised, masked, lengths = noise(content, starts, g, mask_ratio=mask_ratio, lam=lam)
    assert torch.equal(noised[noised != MASK], content[~masked])         # realign: unmasked tokens, in order
    words = (starts | (torch.arange(n) == 0)).cumsum(0)
    for w in words.unique():                                              # whole words only
        assert masked[words == w].all() or not masked[words == w].any()
    num_words = int(words[-1])
    masked_words = len(words[masked].unique())
    assert masked_words == math.ceil(num_words * mask_ratio) == int(lengths.sum())
    spans, zero_length = int((lengths > 0).sum()), int((lengths == 0).sum())
    assert int((noised == MASK).sum()) == spans + zero_length             # one mask per span, every insertion
    assert len(noised) == n - int(masked.sum()) + spans + zero_length     # (fairseq's: the input may grow)


def test_random_replacements_are_about_ten_percent_and_not_special():
    tok = bpe()
    obj = build_objective("infill", tok, model_config("bart", tok))
    blocks = text_blocks(tok, 64, 254)
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    inputs = batch["input_ids"][batch["attention_mask"].bool()]
    n_mask = (inputs == tok.mask_token_id).sum().item()
    # counting random replacements exactly needs the spans: use the noise function with a marker instead
    g = torch.Generator().manual_seed(0)
    table, special = word_start_table(tok), torch.isin(blocks, torch.tensor(tok.all_special_ids))
    marks = [infill_noise(row, word_starts(row, table, sp), 0.3, 3.0, 0.1, MASK, lambda k: torch.full((k,), -2), g)[0]
             for row, sp in zip(blocks, special)]
    marks = torch.cat(marks)
    random_share = (marks == -2).sum().item() / ((marks == -2).sum().item() + (marks == MASK).sum().item())
    assert abs(random_share - 0.1) < 0.03
    assert n_mask > 0
    random_pool = obj._non_special_ids()
    assert not torch.isin(random_pool, torch.tensor(tok.all_special_ids)).any()


def test_collate_frames_pads_and_shifts():
    tok = bpe()
    obj = build_objective("infill", tok, model_config("bart", tok))
    seq_len = 64
    assert obj.block_length(seq_len) == 62
    blocks = random_blocks(tok, 6, 62, special_rate=0.02)
    batch = obj.collate(blocks.tolist(), torch.Generator().manual_seed(3))
    assert all(v.shape == (6, seq_len) for v in batch.values())
    labels = batch["labels"]
    assert torch.equal(labels[:, 1:-1], blocks)                           # target = the original text
    assert (labels[:, 0] == tok.bos_token_id).all() and (labels[:, -1] == tok.eos_token_id).all()
    assert (batch["decoder_input_ids"][:, 0] == tok.eos_token_id).all()    # BART: decoder starts with </s>
    assert torch.equal(batch["decoder_input_ids"][:, 1:], labels[:, :-1])
    for row in range(6):
        mask = batch["attention_mask"][row].bool()
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        ids = batch["input_ids"][row]
        assert ids[0] == tok.bos_token_id and ids[n - 1] == tok.eos_token_id
        assert (ids[n:] == tok.pad_token_id).all()
        assert (ids[1:n - 1] == tok.mask_token_id).any()


def test_sentence_permutation_moves_whole_sentences():
    tok = bpe()
    ends = sentence_end_table(tok)
    vocab = tok.get_vocab()
    assert ends[vocab["."]] and ends[tok.eos_token_id] and not ends[vocab["Ġword"]]
    blocks = text_blocks(tok, 1, 120)[0]
    is_end = ends[blocks].clone()
    is_end[-1] = True
    sentence = torch.cat([torch.zeros(1, dtype=torch.long), is_end[:-1].long()]).cumsum(0)
    assert sentence[-1] >= 3
    orders = set()
    for seed in range(5):
        order = permutation_of_sentences(ends[blocks], torch.Generator().manual_seed(seed))
        for s in sentence.unique():                  # each sentence: one contiguous run, its tokens in order
            at = (sentence[order] == s).nonzero().squeeze(1)
            assert torch.equal(at, torch.arange(at[0], at[0] + len(at)))
            assert torch.equal(order[at], (sentence == s).nonzero().squeeze(1))
        orders.add(tuple(order.tolist()))
    assert len(orders) > 1
    obj = build_objective("infill", tok, model_config("bart", tok), permute_sentences=True, mask_ratio=0.0)
    batch = obj.collate(blocks[None], torch.Generator().manual_seed(0))
    assert torch.equal(batch["labels"][0, 1:-1], blocks)                   # target: the unpermuted original
    assert "attention_mask" not in batch                  # nothing masked, nothing padded: no mask, the fast path
    assert sorted(batch["input_ids"][0, 1:-1].tolist()) == sorted(blocks.tolist())


def test_infill_trains_a_tiny_bart():
    tok = bpe()
    obj = build_objective("infill", tok, model_config("bart", tok))
    model = tiny_model("bart", tok)
    batch = obj.collate(text_blocks(tok, 8, obj.block_length(64)), torch.Generator().manual_seed(0))
    losses = train_steps(obj, model, batch)
    assert losses[-1] < losses[0] - 0.5, losses


def test_small_poisson_lambda_inserts_every_mask_where_the_model_has_room():
    """Zero-length spans are all inserted (fairseq): at lambda 0.5 they outnumber what the masking removes, so the
    input grows past seq_len; a model without the room is refused when the block length is asked, in one line."""
    from models.errors import UserError

    tok = bpe()
    with pytest.raises(UserError, match="poisson_lambda=0.5.*raise model.max_seq_len to at least") as err:
        build_objective("infill", tok, model_config("bart", tok, max_seq_len=64), poisson_lambda=0.5).block_length(64)
    assert "\n" not in str(err.value)
    obj = build_objective("infill", tok, model_config("bart", tok, max_seq_len=128), poisson_lambda=0.5)
    assert obj.block_length(64) == 62  # room enough
    blocks = text_blocks(tok, 8, 62)
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape[1] > 64 and batch["labels"].shape == (8, 64)  # grown inputs, same targets
    assert (batch["input_ids"] == tok.mask_token_id).sum(1).float().mean() > 0.4 * 62 * 0.3  # the insertions
    default = build_objective("infill", tok, model_config("bart", tok, max_seq_len=64))
    assert default.block_length(64) == 62 and default.collate(blocks, torch.Generator())["input_ids"].shape[1] == 64


def test_spans_and_insertions_are_spread_over_the_block():
    """Where the masks stand: spans anywhere among the words and insertions anywhere in the row, not bunched at
    the start or the end (the position of the k-th mask, over many rows, averages to the middle)."""
    g = torch.Generator().manual_seed(0)
    n, rows = 300, 300
    content, starts = torch.arange(n), torch.ones(n, dtype=torch.bool)
    span_centres, insert_centres = [], []
    for _ in range(rows):
        noised, masked, lengths = noise(content, starts, g, lam=1.0)  # many zero-length spans
        span_centres.append(masked.nonzero().float().mean() / n)
        kept = noised != MASK
        realigned = torch.cumsum(kept, 0)  # how many content tokens precede each position
        masks = (~kept).nonzero().squeeze(1)
        insert_centres.append(realigned[masks].float().mean() / kept.sum())
    for centres in (span_centres, insert_centres):
        assert abs(float(torch.stack(centres).mean()) - 0.5) < 0.05


def test_sentence_permutation_reorders_the_input():
    tok = bpe()
    blocks = text_blocks(tok, 16, 120)
    permuted = build_objective("infill", tok, model_config("bart", tok), permute_sentences=True, mask_ratio=0.0)
    plain = build_objective("infill", tok, model_config("bart", tok), mask_ratio=0.0)
    a = permuted.collate(blocks, torch.Generator().manual_seed(0))["input_ids"][:, 1:-1]
    b = plain.collate(blocks, torch.Generator().manual_seed(0))["input_ids"][:, 1:-1]
    assert torch.equal(b, blocks)
    assert (a != blocks).any(1).float().mean() > 0.5  # most multi-sentence rows come out in another order
    assert torch.equal(a.sort(1).values, blocks.sort(1).values)
