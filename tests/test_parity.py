"""Parity with transformers: the presets reproduce BERT, GPT-2, Llama, BART and T5 exactly through one mapping table
per family, in both directions."""
import pytest
import torch

from models import ModelConfig, Transformer
from models.convert import (export_state_dict, from_hf_config, from_transformers, hf_classes, import_state_dict,
                            match_family, to_hf_config, to_transformers)

FAMILIES = hf_classes()  # family -> transformers class, from the family files

V, T, B = 97, 12, 3
LENGTHS = [T, 9, 5]  # right padding
TOL = 1e-4


def hf_model(variant):
    import transformers as tf

    torch.manual_seed(0)
    if variant == "bert":
        model = tf.BertForMaskedLM(tf.BertConfig(
            vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=32, type_vocab_size=2, pad_token_id=0))
    elif variant == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(
            vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=32, bos_token_id=V - 1, eos_token_id=V - 1))
    elif variant == "llama":  # grouped-query attention
        model = tf.LlamaForCausalLM(tf.LlamaConfig(
            vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, max_position_embeddings=32, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    elif variant == "bart":
        model = tf.BartForConditionalGeneration(tf.BartConfig(
            vocab_size=V, d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=32))
        model.final_logits_bias.normal_()  # a buffer, zero by default: make it count
    elif variant in ("t5_tied", "t5_untied"):
        tied = variant == "t5_tied"
        model = tf.T5ForConditionalGeneration(tf.T5Config(
            vocab_size=V, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=1, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=16,
            feed_forward_proj="relu" if tied else "gated-gelu", tie_word_embeddings=tied))
        if not tied:  # transformers 5 ties lm_head even for v1.1 configs; give it its own weights as checkpoints do
            model.lm_head.weight = torch.nn.Parameter(torch.randn(V, 64))
            model.all_tied_weights_keys.pop("lm_head.weight", None)
    _perturb(model)
    return model.eval()


def _perturb(model):
    """Norm weights start at one and biases at zero: randomize them so a misplaced one shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)


def inputs(cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, V, (B, T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    x = x.masked_fill(mask == 0, cfg.pad_token_id)
    batch = dict(input_ids=x, attention_mask=mask)
    if cfg.type_vocab_size:
        batch["token_type_ids"] = (torch.arange(T)[None, :] >= 4).long().expand(B, T).contiguous()
    if cfg.arch == "encoder-decoder":
        dec_len = [8, 6, 3]
        y = torch.randint(3, V, (B, 8), generator=g)
        dec_mask = (torch.arange(8)[None, :] < torch.tensor(dec_len)[:, None]).long()
        batch.update(decoder_input_ids=y.masked_fill(dec_mask == 0, cfg.pad_token_id), decoder_attention_mask=dec_mask)
    return batch


def our_logits(model, batch):
    with torch.no_grad():
        return model.logits(model(**batch))


def hf_logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def max_diff(a, b, batch):
    """Max abs difference over the non-padded positions (of the decoder for encoder-decoder models)."""
    mask = batch.get("decoder_attention_mask", batch["attention_mask"]).bool()
    return (a - b).abs()[mask].max().item()


VARIANTS = {"bert": "bert", "gpt2": "gpt2", "llama": "llama", "bart": "bart", "t5_tied": "t5", "t5_untied": "t5"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_import_parity_and_round_trip(variant):
    family = VARIANTS[variant]
    hf = hf_model(variant)
    cfg = from_hf_config(hf.config)
    assert match_family(cfg) == (family, [])
    assert cfg.tie_embeddings == (variant not in ("t5_untied", "llama"))
    hf_state = hf.state_dict()
    ours = Transformer(cfg).eval()
    ours.load_state_dict(import_state_dict(family, hf_state, cfg), strict=True)
    batch = inputs(cfg)
    diff = max_diff(our_logits(ours, batch), hf_logits(hf, batch), batch)
    print(f"{variant}: max abs logit difference {diff:.2e}")
    assert diff < TOL

    # HF -> ours -> HF reproduces every key of the HF state dict exactly (T5: d_kv=16, so the sqrt scale is exact)
    exported = export_state_dict(family, ours.state_dict(), cfg)
    assert exported.keys() == hf_state.keys()
    for key, value in hf_state.items():
        assert torch.equal(exported[key], value), key
    # from_transformers on the object gives the same model
    again = from_transformers(hf)
    assert again.config == cfg
    assert torch.allclose(our_logits(again, batch), our_logits(ours, batch), atol=0, rtol=0)


PRESET_SIZES = {
    "bert": dict(d_model=64, n_layers=2, n_heads=4, d_ff=128),
    "gpt2": dict(d_model=64, n_layers=2, n_heads=4, d_ff=128, bos_token_id=V - 1, eos_token_id=V - 1,
                 pad_token_id=V - 1),
    "llama": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96),
    "bart": dict(d_model=64, n_layers=1, n_decoder_layers=2, n_heads=4, d_ff=128),
    "t5": dict(d_model=64, n_layers=2, n_heads=4, head_dim=16, d_ff=96, relative_buckets=8,
               relative_max_distance=16),
}
OURS = [("bert", {}), ("gpt2", {}), ("llama", {}), ("llama", dict(tie_embeddings=True)), ("bart", {}),
        ("t5", {}), ("t5", dict(tie_embeddings=True, activation="relu"))]


def our_model(family, extra):
    torch.manual_seed(0)
    cfg = ModelConfig.preset(family, vocab_size=V, max_seq_len=32, dropout=0.0, **PRESET_SIZES[family], **extra)
    model = Transformer(cfg)
    _perturb(model)
    return model.eval()


@pytest.mark.parametrize("family,extra", OURS, ids=[f"{f}-{'-'.join(map(str, e.values())) or 'preset'}"
                                                    for f, e in OURS])
def test_export_round_trip(family, extra, tmp_path):
    model = our_model(family, extra)
    cfg = model.config
    state = model.state_dict()
    # ours -> HF -> ours: identical state dicts
    back = import_state_dict(family, export_state_dict(family, state, cfg), cfg)
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    # the config survives the trip through the HF config
    assert from_hf_config(to_hf_config(family, cfg)) == cfg
    # ours -> to_transformers: same logits
    hf = to_transformers(model, family)
    assert type(hf).__name__ == FAMILIES[family]
    batch = inputs(cfg, seed=2)
    expected = our_logits(model, batch)
    diff = max_diff(hf_logits(hf, batch), expected, batch)
    print(f"{family} {extra}: to_transformers max abs logit difference {diff:.2e}")
    assert diff < TOL
    # and through save_pretrained / from_transformers(path) (safetensors, no custom code)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = from_transformers(tmp_path)
    assert reloaded.config == cfg
    assert max_diff(our_logits(reloaded, batch), expected, batch) == 0.0


def test_match_family():
    for family in FAMILIES:
        assert match_family(ModelConfig.preset(family)) == (family, [])
    rotary_bert = ModelConfig.preset("bert", d_model=64, n_heads=4, position="rotary")
    assert match_family(rotary_bert) == ("bert", ["position"])
    # the original T5 (ReLU, tied head) and a tied Llama are still those families
    assert match_family(ModelConfig.preset("t5", activation="relu", tie_embeddings=True)) == ("t5", [])
    assert match_family(ModelConfig.preset("llama", tie_embeddings=True, n_kv_heads=8)) == ("llama", [])
    # grouped-query heads cannot be written as BERT; "transformer" has no HF class
    assert match_family(ModelConfig.preset("bert", d_model=64, n_heads=4, n_kv_heads=2)) == ("bert", ["n_kv_heads"])
    family, differing = match_family(ModelConfig.preset("transformer"))
    assert family in FAMILIES and differing
    with pytest.raises(ValueError, match="position"):
        to_transformers(Transformer(ModelConfig.preset("bert", d_model=32, n_layers=1, n_heads=4, d_ff=64,
                                                       vocab_size=V, position="rotary")), "bert")


def test_import_refuses_mismatched_state_dict():
    hf = hf_model("gpt2")
    cfg = from_hf_config(hf.config)
    state = dict(hf.state_dict())
    state["transformer.h.0.attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="does not use"):
        import_state_dict("gpt2", state, cfg)
    del state["transformer.h.1.ln_2.weight"]
    with pytest.raises(ValueError, match="lacks"):
        import_state_dict("gpt2", state, cfg)


def test_training_dropout_rates_survive_import_and_export():
    """Logit parity is measured in eval mode; these rates decide the training noise of an imported model."""
    from transformers import BartConfig, T5Config

    def ff_dropout(cfg):
        return Transformer(cfg).decoder.layers[0].ff.dropout.p

    small = dict(d_model=16, d_ff=32, vocab_size=64)
    bart = from_hf_config(BartConfig(**{k: v for k, v in small.items() if k != "d_ff"}, encoder_ffn_dim=32,
                                     decoder_ffn_dim=32, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, dropout=0.1,
                                     attention_dropout=0.0, activation_dropout=0.2))
    assert ff_dropout(bart) == 0.2 and bart.attention_dropout_rate == 0.0
    assert to_hf_config("bart", bart).activation_dropout == 0.2
    for proj, gated in [("relu", False), ("gated-gelu", True)]:  # T5 v1.0 and v1.1
        t5 = from_hf_config(T5Config(**small, d_kv=8, num_layers=1, num_heads=2, feed_forward_proj=proj,
                                     dropout_rate=0.15))
        assert t5.gated == gated and ff_dropout(t5) == 0.15
    assert [ModelConfig.preset(p).activation_dropout_rate for p in ("bert", "gpt2", "bart", "t5")] == \
        [0.0, 0.0, 0.0, 0.1]
    with pytest.raises(ValueError, match="activation_dropout must be in"):
        ModelConfig.preset("bart", activation_dropout=1.0)
