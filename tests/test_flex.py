"""FlexAttention for document masks: its block mask allows exactly what the SDPA boolean mask allows, position by
position, a model gives the same outputs through either kernel, and run.attention_kernel picks flex only where it
can train (on CPU torch has no FlexAttention backward, so auto stays on SDPA here)."""
import warnings

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask

from models import ModelConfig, Transformer
from models.attention import build_mask
from models.flex import document_block_mask
from pretrain.errors import ConfigError
from pretrain.train.hardware import attention_kernel

V = 50
SMALL = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, vocab_size=V, max_seq_len=40)
# rows of 12 with several documents and padding (-1); the decoder side has its own lengths
SEGMENTS = torch.tensor([[0] * 4 + [1] * 5 + [2] * 2 + [-1], [0] * 7 + [1] * 5, [0] * 3 + [1] * 3 + [-1] * 6])
DECODER_SEGMENTS = torch.tensor([[0] * 3 + [1] * 4 + [2] * 3 + [-1] * 2, [0] * 5 + [1] * 5 + [-1] * 2,
                                 [0] * 2 + [1] * 2 + [-1] * 8])


def dense(block_mask, q_len, k_len):
    return create_mask(block_mask.mask_mod, SEGMENTS.shape[0], 1, q_len, k_len, device="cpu")


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("padding", [False, True], ids=["no-key-padding", "key-padding"])
def test_block_mask_equals_the_boolean_mask_position_by_position(causal, padding):
    key_padding = (SEGMENTS >= 0) if padding else None
    want, _ = build_mask(key_padding, 12, 12, causal, None, SEGMENTS, SEGMENTS)
    got = dense(document_block_mask(SEGMENTS, SEGMENTS, key_padding, causal), 12, 12)
    assert torch.equal(got, want.expand_as(got))


def test_cross_attention_block_mask_equals_the_boolean_mask():
    key_padding = SEGMENTS >= 0
    want, _ = build_mask(key_padding, 12, 12, False, None, DECODER_SEGMENTS, SEGMENTS)
    got = dense(document_block_mask(DECODER_SEGMENTS, SEGMENTS, key_padding), 12, 12)
    assert torch.equal(got, want.expand_as(got))


def outputs(model, kernel, x, dec):
    model.use_attention_kernel(kernel)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uncompiled flex_attention warns that it is the slow reference path
        if model.config.arch == "encoder-decoder":
            return model(x, decoder_input_ids=dec, segment_ids=SEGMENTS, decoder_segment_ids=DECODER_SEGMENTS)
        return model(x, segment_ids=SEGMENTS)


@pytest.mark.parametrize("preset", ["bert", "gpt2", "llama", "bart"])  # learned and rotary positions; cross-attention
def test_model_outputs_are_the_same_through_flex_and_sdpa(preset):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset(preset, **SMALL, dropout=0.0)).eval()
    gen = torch.Generator().manual_seed(1)
    x, dec = torch.randint(3, V, SEGMENTS.shape, generator=gen), torch.randint(3, V, SEGMENTS.shape, generator=gen)
    sdpa, flex = outputs(model, "sdpa", x, dec), outputs(model, "flex", x, dec)
    real = (DECODER_SEGMENTS if model.config.arch == "encoder-decoder" else SEGMENTS) >= 0
    assert (sdpa - flex)[real].abs().max() < 1e-5
    assert not torch.equal(sdpa, outputs(model, "sdpa", torch.roll(x, 1, dims=1), dec))  # the check can see a change


def kernel_for(preset="llama", device="cuda", compile=True, documents=True, choice="auto", **model):
    return attention_kernel(choice, documents, ModelConfig.preset(preset, **SMALL, **model), device, compile)


def test_auto_picks_flex_only_where_it_can_train():
    assert kernel_for() == "flex"
    assert kernel_for("bert", attention_dropout=0.0) == "flex"
    assert kernel_for(device="cpu") == "sdpa"  # no FlexAttention backward on CPU
    assert kernel_for(compile=False) == "sdpa"
    assert kernel_for("t5") == "sdpa"  # relative position bias
    assert kernel_for("bert") == "sdpa"  # attention dropout 0.1
    assert kernel_for(documents=False) == "sdpa"
    assert kernel_for(choice="sdpa") == "sdpa"


@pytest.mark.parametrize("setting, words", [
    (dict(device="cpu"), "no backward pass on CPU"),
    (dict(compile=False), "needs run.compile true"),
    (dict(preset="t5"), "relative position bias"),
    (dict(preset="gpt2"), "set model.attention_dropout 0"),
    (dict(documents=False), "set objective.document_masking true"),
])
def test_explicit_flex_where_it_cannot_train_is_refused_in_one_line(setting, words):
    with pytest.raises(ConfigError) as e:
        kernel_for(choice="flex", **setting)
    assert words in str(e.value) and "\n" not in str(e.value)
