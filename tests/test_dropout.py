"""The CPU dropout: right keep rate, unbiased, gradient through the same mask, and attention that uses it still
masks exactly what SDPA masks."""
import math

import pytest
import torch

from models import ModelConfig
from models.attention import Attention
from models.dropout import LEVELS, Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_rate_and_scale_keep_the_mean(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of 4: the last random word is only partly used
    y = dropout(torch.ones(n), p)
    keep = round((1 - p) * LEVELS) / LEVELS
    assert abs(keep - (1 - p)) < 8e-6
    kept = y != 0
    assert abs(kept.float().mean().item() - keep) < 5 * math.sqrt(keep * (1 - keep) / n)
    assert (y[kept] == 1 / keep).all()  # every kept value scaled by the exact inverse keep rate
    assert abs(y.double().mean().item() - 1.0) < 5 * math.sqrt((1 - keep) / keep / n)


def test_mask_is_uniform_over_positions_and_fresh_each_call():
    torch.manual_seed(0)
    masks = torch.stack([keep_mask((64, 256), 0.5, "cpu")[0] for _ in range(200)]).float()
    per_position = masks.mean(0)  # each of the 16,384 positions kept in ~half of 200 draws
    assert (per_position - 0.5).abs().max() < 0.2
    assert not torch.equal(masks[0], masks[1])
    # neighbouring slices of one random word are independent: P(both kept) = P(kept)^2
    both = (masks[:, :, 0::4] * masks[:, :, 1::4]).mean().item()
    assert abs(both - 0.25) < 0.01


def test_seeded_calls_repeat_exactly():
    x = torch.randn(3, 5, 7)
    torch.manual_seed(7)
    a = dropout(x, 0.2)
    torch.manual_seed(7)
    assert torch.equal(a, dropout(x, 0.2))


def test_gradient_flows_through_the_same_mask():
    x = (torch.rand(4, 33) + 1).requires_grad_()
    g = torch.randn(4, 33)
    y = dropout(x, 0.25)
    y.backward(g)
    scale = LEVELS / round(0.75 * LEVELS)
    torch.testing.assert_close(y, torch.where(y != 0, x * scale, 0.0), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, torch.where(y != 0, g * scale, 0.0), rtol=0, atol=0)


def test_module_is_identity_in_eval_and_has_no_state():
    layer = Dropout(0.5).eval()
    x = torch.randn(10, 10)
    assert layer(x) is x and dropout(x, 0.0) is x
    assert layer.state_dict() == {} and "p=0.5" in repr(layer)
    assert dropout(x.to(torch.bfloat16), 0.5).dtype == torch.bfloat16


def test_attention_with_dropout_is_softmax_then_masked_scale():
    """The explicit CPU path, checked against the formula with the mask drawn from the same seed."""
    cfg = ModelConfig.preset("gpt2", d_model=16, n_heads=2, n_layers=1, vocab_size=10, max_seq_len=8, dropout=0.3)
    attn = Attention(cfg).train()
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    torch.manual_seed(3)
    out = attn._explicit(q, k, v, None, True, 0.3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    scores = scores.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
    torch.manual_seed(3)
    keep, scale = keep_mask((2, 2, 6, 6), 0.3, "cpu")
    torch.testing.assert_close(out, (scores.softmax(-1) * keep * scale) @ v)
