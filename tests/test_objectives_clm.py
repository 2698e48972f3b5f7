"""CLM: labels are inputs shifted by one; the prefix LM's encoder prefix + decoder targets recover the block."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from objectives_fixtures import bpe, model_config, random_blocks, text_blocks, tiny_model, train_steps, unigram

from models.errors import UserError
from objectives import build_objective
from objectives.base import perplexity


def test_decoder_labels_are_inputs_shifted_by_one():
    tok = bpe()
    obj = build_objective("clm", tok, model_config("gpt2", tok))
    assert obj.block_length(32) == 33
    blocks = text_blocks(tok, 3, 33)
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    assert set(batch) == {"input_ids", "labels"}  # packed: no padding, no attention_mask
    assert batch["input_ids"].shape == batch["labels"].shape == (3, 32)
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    assert torch.equal(torch.cat([batch["input_ids"], batch["labels"][:, -1:]], dim=1), blocks)


def encoder_mask(batch) -> torch.Tensor:
    """The encoder's padding mask (True = token); absent from the batch when nothing is padded."""
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"], dtype=torch.bool) if mask is None else mask.bool()


def recover_prefix_lm(batch, row):
    """Encoder prefix (unpadded) + target continuation, as one list."""
    prefix = batch["input_ids"][row][encoder_mask(batch)[row]]
    target = batch["labels"][row][batch["labels"][row] != -100]
    return prefix.tolist() + target.tolist()


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), seq_len=st.integers(1, 40), batch=st.integers(1, 4))
def test_prefix_lm_recovers_the_block(seed, seq_len, batch):
    tok = unigram()
    obj = build_objective("clm", tok, model_config("t5", tok))
    blocks = random_blocks(tok, batch, obj.block_length(seq_len), seed=seed)
    out = obj.collate(blocks, torch.Generator().manual_seed(seed))
    assert all(out[k].shape == (batch, seq_len) for k in ("input_ids", "decoder_input_ids", "labels"))
    padded = not encoder_mask(out).all()
    assert ("attention_mask" in out) == padded     # a mask exactly when some prefix is padded
    for row in range(batch):
        assert recover_prefix_lm(out, row) == blocks[row].tolist()
        mask = encoder_mask(out)[row]
        assert mask[0] and (mask.long().diff() <= 0).all()             # right padding only
        assert (out["input_ids"][row][~mask] == tok.pad_token_id).all()
        valid = out["labels"][row] != -100
        assert valid[0] and (valid.long().diff() <= 0).all()
        assert out["decoder_input_ids"][row, 0] == tok.pad_token_id      # decoder start (T5: pad)
        assert torch.equal(out["decoder_input_ids"][row, 1:][valid[1:]], out["labels"][row][valid][:-1])


def test_prefix_split_points_cover_the_range():
    tok = unigram()
    obj = build_objective("clm", tok, model_config("t5", tok), prefix_lm=True)  # explicit, as the model implies
    out = obj.collate(random_blocks(tok, 2000, 9), torch.Generator().manual_seed(0))
    prefix_lengths = out["attention_mask"].sum(1)
    assert set(prefix_lengths.tolist()) == set(range(1, 9))
    counts = torch.bincount(prefix_lengths, minlength=9)[1:].float()
    assert (counts / counts.sum() - 1 / 8).abs().max() < 0.03           # uniform split point


def test_metrics_and_perplexity():
    tok = bpe()
    obj = build_objective("clm", tok, model_config("gpt2", tok))
    model = tiny_model("gpt2", tok).eval()
    batch = obj.collate(text_blocks(tok, 2, 17), torch.Generator())
    loss, metrics = obj.loss(model, batch)
    assert obj.perplexity and abs(perplexity(loss.item()) - loss.detach().exp().item()) < 1e-3  # the trainer adds it
    assert metrics["n_predicted"].item() == 2 * 16
    assert 0 <= metrics["accuracy"].item() <= 1


def test_prefix_lm_that_contradicts_the_model_is_refused():
    tok = unigram()
    with pytest.raises(UserError, match="prefix_lm=True does not fit decoder"):
        build_objective("clm", tok, model_config("gpt2", tok), prefix_lm=True)
    with pytest.raises(UserError, match="prefix_lm=False does not fit encoder-decoder"):
        build_objective("clm", tok, model_config("t5", tok), prefix_lm=False)
    assert not build_objective("clm", tok, model_config("gpt2", tok)).prefix_lm
    assert build_objective("clm", tok, model_config("t5", tok)).prefix_lm


@pytest.mark.parametrize("preset,arch,make_tok", [("gpt2", "decoder", bpe), ("llama", "decoder", bpe),
                                                   ("t5", "encoder-decoder", unigram),
                                                   ("bart", "encoder-decoder", bpe)])
def test_clm_trains_a_tiny_model(preset, arch, make_tok):
    tok = make_tok()
    obj = build_objective("clm", tok, model_config(preset, tok))
    model = tiny_model(preset, tok)
    batch = obj.collate(text_blocks(tok, 8, obj.block_length(32)), torch.Generator().manual_seed(0))
    losses = train_steps(obj, model, batch)
    assert losses[-1] < losses[0] - 0.5, losses
