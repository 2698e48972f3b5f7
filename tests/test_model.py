"""Backbone: masks checked position by position, configs that cannot work refused in one line."""
import pytest
import torch

from models import ModelConfig, Transformer, num_params

V, T = 50, 12
SMALL = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, vocab_size=V, max_seq_len=32, dropout=0.0)


def build(preset, train=False, **kw):
    """train=True: dropout on and training mode, so attention takes the explicit CPU dropout path. Every forward
    reseeds (see `run`), so all of them draw the same masks and any change in the output comes from the input."""
    extra = {"head_dim": 8} if preset == "t5" else {}
    if train:
        extra["dropout"] = 0.1
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset, **{**SMALL, **extra, **kw})
    return Transformer(cfg).train(train)


def ids(batch=2, length=T, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, (batch, length), generator=g)


def changed(a, b):
    """Per position: did the output move?"""
    return (a - b).abs().amax(dim=-1) > 1e-5


ENCODERS = ["bert"]
DECODERS = ["gpt2", "llama"]
SEQ2SEQ = ["bart", "t5", "transformer"]
ALL = ENCODERS + DECODERS + SEQ2SEQ


def run(model, x, mask=None, dec=None, dec_mask=None):
    torch.manual_seed(1)
    if model.config.arch == "encoder-decoder":
        return model(x, mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
    return model(x, mask)


@pytest.mark.parametrize("preset", DECODERS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-dropout"])
def test_causal_mask_position_by_position(preset, train):
    model, x = build(preset, train), ids()
    base = run(model, x)
    for t in range(T - 1):
        later = x.clone()
        later[:, t + 1:] = (later[:, t + 1:] + 1) % V
        assert not changed(base, run(model, later))[:, : t + 1].any(), f"future token leaked into position <= {t}"
    for t in range(1, T):
        earlier = x.clone()
        earlier[:, t - 1] = (earlier[:, t - 1] + 1) % V
        assert changed(base, run(model, earlier))[:, t:].all(), f"position >= {t} ignores token {t - 1}"


@pytest.mark.parametrize("preset", SEQ2SEQ)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-dropout"])
def test_decoder_of_seq2seq_is_causal(preset, train):
    model, x, dec = build(preset, train), ids(), ids(seed=2)
    base = run(model, x, dec=dec)
    for t in range(T - 1):
        later = dec.clone()
        later[:, t + 1:] = (later[:, t + 1:] + 1) % V
        assert not changed(base, run(model, x, dec=later))[:, : t + 1].any()
        earlier = dec.clone()
        earlier[:, t] = (earlier[:, t] + 1) % V
        assert changed(base, run(model, x, dec=earlier))[:, t:].all()


@pytest.mark.parametrize("preset", ENCODERS + SEQ2SEQ)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-dropout"])
def test_encoder_is_bidirectional(preset, train):
    model, x = build(preset, train), ids()
    torch.manual_seed(1)
    base = model.encode(x)
    for t in range(T):
        other = x.clone()
        other[:, t] = (other[:, t] + 1) % V
        torch.manual_seed(1)
        assert changed(base, model.encode(other)).all(), f"some position ignores token {t}"


@pytest.mark.parametrize("preset", ALL)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-dropout"])
def test_padding_never_affects_real_tokens(preset, train):
    model, x = build(preset, train), ids()
    mask = torch.ones_like(x)
    mask[0, 8:] = 0
    mask[1, 5:] = 0
    dec = ids(seed=3)
    base = run(model, x, mask, dec, mask)
    garbage = torch.where(mask.bool(), x, ids(seed=4))
    dec_garbage = torch.where(mask.bool(), dec, ids(seed=5))
    out = run(model, garbage, mask, dec_garbage, mask)
    real = mask.bool()
    assert not changed(base, out)[real].any()


@pytest.mark.parametrize("preset", SEQ2SEQ)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-dropout"])
def test_cross_attention_sees_every_encoder_token_but_no_padding(preset, train):
    model, x, dec = build(preset, train), ids(), ids(seed=2)
    mask = torch.ones_like(x)
    mask[:, 9:] = 0
    base = run(model, x, mask, dec)
    for t in range(9):
        other = x.clone()
        other[:, t] = (other[:, t] + 1) % V
        assert changed(base, run(model, other, mask, dec)).all(), f"decoder does not see encoder token {t}"
    padded = x.clone()
    padded[:, 9:] = (padded[:, 9:] + 7) % V
    assert not changed(base, run(model, padded, mask, dec)).any()


def test_encoder_output_is_reusable():
    model, x, dec = build("bart"), ids(), ids(seed=2)
    enc = model.encode(x)
    torch.testing.assert_close(model(x, decoder_input_ids=dec, encoder_hidden=enc), model(x, decoder_input_ids=dec))


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rotary", "relative"])
@pytest.mark.parametrize("activation", ["gelu", "relu", "swiglu", "geglu"])
def test_every_option_combination_runs_and_trains(position, activation):
    cfg = ModelConfig(arch="decoder", position=position, activation=activation, norm="rmsnorm", n_kv_heads=2,
                      **SMALL)
    model = Transformer(cfg)
    x = ids()
    loss = torch.nn.functional.cross_entropy(model.logits(model(x)).flatten(0, 1), x.flatten())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_grouped_query_attention_has_fewer_kv_params():
    full = ModelConfig.preset("llama", **SMALL)
    gqa = ModelConfig.preset("llama", n_kv_heads=1, **SMALL)
    assert num_params(gqa) < num_params(full)
    assert run(Transformer(gqa).eval(), ids()).shape == (2, T, 32)


def test_param_count_and_flops():
    cfg = ModelConfig.preset("gpt2", d_model=768, n_layers=12, n_heads=12, d_ff=3072)
    assert num_params(cfg) == 124_439_808  # GPT-2 small, as published
    assert 6 * 85e6 < cfg.flops_per_token(1024) < 6 * 124.5e6 + 12 * 12 * 768 * 1024 + 1
    bert = ModelConfig.preset("bert", d_model=768, n_layers=12, n_heads=12, d_ff=3072)
    assert abs(num_params(bert) - 109.5e6) < 1.5e6  # BertForMaskedLM base, without pooler


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(d_model=30, n_heads=4), "not divisible by n_heads"),
    (dict(position="rotery"), "unknown position"),
    (dict(activation="gelu2"), "unknown activation"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(position="rotary", d_model=20, n_heads=4), "even head dimension"),
])
def test_bad_config_is_one_clear_line(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        ModelConfig(**{**SMALL, **kwargs})
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_unknown_option_and_preset():
    with pytest.raises(ValueError, match="unknown model option.*d_modle"):
        ModelConfig.preset("bert", d_modle=3)
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.preset("bort")


def test_sequence_longer_than_positions():
    model = build("gpt2")
    with pytest.raises(ValueError, match="longer than max_seq_len 32.*raise model.max_seq_len"):
        model(ids(length=33))


def test_attention_weights_show_each_shape():
    from models.inspect import attention_weights

    x = ids(batch=1)
    enc = attention_weights(build("bert"), x)["encoder self"]
    assert enc.shape == (4, T, T) and (enc > 0).all()  # bidirectional: every key gets weight
    dec = attention_weights(build("gpt2"), x)["decoder self"]
    lower = torch.ones(T, T, dtype=torch.bool).tril()
    assert (dec[:, ~lower] == 0).all() and (dec[:, lower] > 0).all()  # the causal triangle
    maps = attention_weights(build("bart"), x, decoder_input_ids=x[:, :5])
    assert maps["decoder cross"].shape == (4, 5, T)
    torch.testing.assert_close(maps["decoder cross"].sum(-1), torch.ones(4, 5))
    rel = attention_weights(build("t5"), x)  # relative bias goes through the explicit path too
    assert rel["encoder self"].shape == (4, T, T)
