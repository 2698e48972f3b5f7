"""Span corruption: T5's lengths, fixed input length, sentinels in order, inputs + targets rebuild the block."""
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from objectives_fixtures import (SENTINELS, bpe, merge_by_sentinel, model_config, random_blocks, text_blocks, tiny_model, train_steps,
                                 unigram)

from objectives import build_objective
from objectives.span import compute_input_and_target_lengths, random_spans_noise_mask, span_counts
from models.errors import UserError


def sentinel_ids(tok):
    return [tok.convert_tokens_to_ids(s) for s in SENTINELS]


def test_lengths_match_t5():
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)
    assert compute_input_and_target_lengths(128, 0.15, 3.0) == (141, 29)
    obj = build_objective("span", unigram(), model_config("t5", unigram(), max_seq_len=512))
    assert obj.block_length(512) == 568 and obj.block_length(128) == 141


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), seq_len=st.integers(10, 300), batch=st.integers(1, 3),
       density=st.sampled_from([0.15, 0.3, 0.45]), mean=st.sampled_from([1.0, 3.0, 5.0]))
def test_inputs_and_targets_rebuild_the_block(seed, seq_len, batch, density, mean):
    tok = unigram()
    obj = build_objective("span", tok, model_config("t5", tok), noise_density=density, mean_span_length=mean)
    assume(span_counts(compute_input_and_target_lengths(seq_len, density, mean)[0], density, mean)[1] <= 100)
    raw = obj.block_length(seq_len)
    blocks = random_blocks(tok, batch, raw, seed=seed, special_rate=0.0)
    out = obj.collate(blocks, torch.Generator().manual_seed(seed))
    sentinels = sentinel_ids(tok)
    assert out["input_ids"].shape == (batch, seq_len)                    # fixed encoder length, no padding
    assert out["labels"].shape == (batch, compute_input_and_target_lengths(seq_len, density, mean)[1])
    assert "attention_mask" not in out
    _, spans = span_counts(raw, density, mean)
    for row in range(batch):
        inputs, targets = out["input_ids"][row].tolist(), out["labels"][row].tolist()
        assert inputs[-1] == targets[-1] == tok.eos_token_id
        assert [t for t in inputs if t in sentinels] == sentinels[:spans]   # in order, one per span
        assert [t for t in targets if t in sentinels] == sentinels[:spans]
        assert targets[0] == sentinels[0]
        assert merge_by_sentinel(inputs, targets, sentinels) == blocks[row].tolist()
    assert out["decoder_input_ids"][:, 0].eq(tok.pad_token_id).all()
    assert torch.equal(out["decoder_input_ids"][:, 1:], out["labels"][:, :-1])


def test_noise_mask_shape_and_statistics():
    g = torch.Generator().manual_seed(0)
    noise = random_spans_noise_mask(2000, 568, 0.15, 3.0, g)
    num_noise, num_spans = span_counts(568, 0.15, 3.0)
    assert (noise.sum(1) == num_noise).all() and (num_noise, num_spans) == (85, 28)
    assert not noise[:, 0].any()                                          # starts with non-noise
    starts = noise & ~torch.nn.functional.pad(noise[:, :-1], (1, 0))
    assert (starts.sum(1) == num_spans).all()
    # runs are placed uniformly: away from the first position, every position is noise about equally often
    rate = noise[:, 50:-50].float().mean(0)
    assert (rate - 0.15).abs().max() < 0.04


def test_works_with_a_bpe_tokenizer_with_sentinels():
    tok = bpe(sentinels=True)
    obj = build_objective("span", tok, model_config("t5", tok))
    blocks = text_blocks(tok, 2, obj.block_length(64))
    out = obj.collate(blocks, torch.Generator())
    for row in range(2):
        merged = merge_by_sentinel(out["input_ids"][row].tolist(), out["labels"][row].tolist(), sentinel_ids(tok))
        assert merged == blocks[row].tolist()


def test_missing_or_too_few_sentinels_are_refused():
    with pytest.raises(UserError, match="sentinel"):
        build_objective("span", bpe(), model_config("t5", bpe()))
    with pytest.raises(UserError, match="sentinels"):
        build_objective("span", unigram(), model_config("t5", unigram())).block_length(4096)


def test_span_trains_a_tiny_t5():
    tok = unigram()
    obj = build_objective("span", tok, model_config("t5", tok))
    model = tiny_model("t5", tok)
    batch = obj.collate(text_blocks(tok, 8, obj.block_length(64)), torch.Generator().manual_seed(0))
    losses = train_steps(obj, model, batch)
    assert losses[-1] < losses[0] - 0.5, losses


def test_noise_span_lengths_vary_as_t5s_random_segmentation():
    """The noise is cut into spans at uniformly random places: lengths average noise / spans and spread widely
    (equal-length spans, or one long span and the rest of length 1, would fail here)."""
    g = torch.Generator().manual_seed(0)
    noise = random_spans_noise_mask(2000, 568, 0.15, 3.0, g)
    num_noise, num_spans = span_counts(568, 0.15, 3.0)
    starts = noise & ~torch.nn.functional.pad(noise[:, :-1], (1, 0))
    run_id = starts.cumsum(1)
    lengths = torch.stack([(noise & (run_id == k)).sum(1) for k in range(1, num_spans + 1)], 1).float()
    assert (lengths >= 1).all() and torch.allclose(lengths.sum(1), torch.tensor(float(num_noise)))
    # a random composition of 85 into 28 positive parts: each part is 1 + a count of mean 57/28 and variance
    # about mean * (1 + mean) -- std ~ 2.4
    assert abs(lengths.mean().item() - num_noise / num_spans) < 1e-4
    assert 2.0 < lengths.std().item() < 2.8
    assert lengths.max(1).values.float().mean() > 6  # the longest span of a row is typically well above the mean
