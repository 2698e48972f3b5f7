"""ModernBERT and its decoder twin (issue 32): sliding-window masks pinned position by position and equal through
SDPA and FlexAttention; logits parity with transformers' ModernBertForMaskedLM / ModernBertDecoderForCausalLM in
both directions (weights scaled up so a wrong activation, norm or window shows); the presets are the Hub configs;
a 2-layer run of each trains, resumes exactly, exports and comes back through --from-hub with identical logits."""
import dataclasses
import warnings

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask

from models import ModelConfig, Transformer
from models.attention import build_mask, local_mask, window_band
from models.convert import (export_state_dict, from_hf_config, from_transformers, import_state_dict, match_family,
                            to_hf_config, to_transformers)
from models.families.modernbert import LARGE
from models.flex import document_block_mask

V, TOL = 97, 1e-4
TINY = dict(vocab_size=V, d_model=64, n_layers=4, n_heads=4, d_ff=96, max_seq_len=64, local_attention=8,
            pad_token_id=0, bos_token_id=1, eos_token_id=2)
FAMILIES = {"modernbert": "ModernBertForMaskedLM", "modernbert_decoder": "ModernBertDecoderForCausalLM"}


# ---- masks --------------------------------------------------------------------------------------------------------
def test_window_band_position_by_position():
    """local_attention 4: an encoder query sees |q - k| <= 2; a decoder query its 2 latest keys (itself included),
    as transformers' ModernBert / ModernBertDecoder masks do."""
    encoder = [[1, 1, 1, 0, 0, 0],
               [1, 1, 1, 1, 0, 0],
               [1, 1, 1, 1, 1, 0],
               [0, 1, 1, 1, 1, 1],
               [0, 0, 1, 1, 1, 1],
               [0, 0, 0, 1, 1, 1]]
    decoder = [[1, 0, 0, 0, 0, 0],
               [1, 1, 0, 0, 0, 0],
               [0, 1, 1, 0, 0, 0],
               [0, 0, 1, 1, 0, 0],
               [0, 0, 0, 1, 1, 0],
               [0, 0, 0, 0, 1, 1]]
    assert window_band(6, 4, causal=False).int().tolist() == encoder
    assert window_band(6, 4, causal=True).int().tolist() == decoder


def test_window_with_documents_sees_its_document_and_its_window_only():
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 1, -1]])  # two documents and one padding position
    mask, is_causal = build_mask(segments >= 0, 8, 8, False, None, segments, segments)
    local, _ = local_mask(mask, is_causal, 8, 2, False)  # window 2: one token either side
    want = [[1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 1, 1, 0, 0, 0, 0],  # not token 4: the next document
            [0, 0, 0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1, 1, 0],  # not the padding key
            [0, 0, 0, 0, 0, 0, 1, 1]]  # a padding query keeps its window (never an empty row)
    assert local[0, 0].int().tolist() == want
    causal_mask, causal_flag = build_mask(segments >= 0, 8, 8, True, None, segments, segments)
    local, _ = local_mask(causal_mask, causal_flag, 8, 4, True)  # the 2 latest keys of the same document
    assert local[0, 0].int().tolist() == [[1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0],
                                          [0, 1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0],
                                          [0, 0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0],
                                          [0, 0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0, 1, 1]]


SEGMENTS = torch.tensor([[0] * 9 + [1] * 7 + [-1] * 2, [0] * 18, [0] * 3 + [1] * 10 + [-1] * 5])


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_flex_block_mask_equals_the_sdpa_window_mask(causal):
    padding = SEGMENTS >= 0
    mask, is_causal = build_mask(padding, 18, 18, causal, None, SEGMENTS, SEGMENTS)
    want, _ = local_mask(mask, is_causal, 18, 6, causal)
    block = document_block_mask(SEGMENTS, SEGMENTS, padding, causal, window=6)
    got = create_mask(block.mask_mod, 3, 1, 18, 18, device="cpu")
    assert torch.equal(got, want.expand_as(got))


@pytest.mark.parametrize("family", FAMILIES)
def test_model_outputs_are_the_same_through_flex_and_sdpa(family):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset(family, **{**TINY, "n_layers": 2, "local_attention": 6})).eval()
    x = torch.randint(3, V, SEGMENTS.shape, generator=torch.Generator().manual_seed(1))
    out = {}
    for kernel in ("sdpa", "flex"):
        model.use_attention_kernel(kernel)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # uncompiled flex_attention warns that it is the slow reference path
            out[kernel] = model(x, segment_ids=SEGMENTS)
    assert (out["sdpa"] - out["flex"])[SEGMENTS >= 0].abs().max() < 1e-5


# ---- parity with transformers -------------------------------------------------------------------------------------
def loud(model):
    """Norm gains and biases off one and zero, weight matrices scaled up: a wrong activation, norm or window moves
    the logits far beyond the tolerance (test_parity_can_see_a_wrong_activation_or_window checks it does)."""
    torch.manual_seed(3)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
            else:
                p.mul_(8.0)
    return model.eval()


def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(3, V, (3, 30), generator=g)
    mask = (torch.arange(30)[None] < torch.tensor([30, 21, 11])[:, None]).long()
    return dict(input_ids=x.masked_fill(mask == 0, 0), attention_mask=mask)


def diff(ours, hf, b):
    with torch.no_grad():
        return (ours.logits(ours(**b)) - hf(**b).logits)[b["attention_mask"].bool()].abs().max().item()


def hf_model(family):
    import transformers as tf

    torch.manual_seed(0)
    cls, config = (tf.ModernBertForMaskedLM, tf.ModernBertConfig) if family == "modernbert" else \
        (tf.ModernBertDecoderForCausalLM, tf.ModernBertDecoderConfig)
    hf_cfg = config(vocab_size=V, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=96,
                    max_position_embeddings=64, local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                    cls_token_id=1, sep_token_id=2)
    return loud(cls(hf_cfg))


@pytest.mark.parametrize("family", FAMILIES)
def test_import_parity_and_round_trip(family):
    hf = hf_model(family)
    cfg = from_hf_config(hf.config)
    assert match_family(cfg) == (family, [])
    assert cfg == ModelConfig.preset(family, **TINY)
    ours = Transformer(cfg).eval()
    ours.load_state_dict(import_state_dict(family, hf.state_dict(), cfg), strict=True)
    b = batch()
    assert diff(ours, hf, b) < TOL
    exported = export_state_dict(family, ours.state_dict(), cfg)
    assert exported.keys() == hf.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in hf.state_dict().items())
    assert diff(from_transformers(hf), hf, b) < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_export_parity_eager_and_sdpa(family):
    torch.manual_seed(0)
    ours = loud(Transformer(ModelConfig.preset(family, **TINY)))
    assert from_hf_config(to_hf_config(family, ours.config)) == ours.config
    hf = to_transformers(ours, family)
    assert type(hf).__name__ == FAMILIES[family]
    b = batch()
    for implementation in ("sdpa", "eager"):
        hf.config._attn_implementation = implementation
        assert diff(ours, hf, b) < TOL, implementation


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_can_see_a_wrong_activation_or_window(family):
    """The tolerance is tight enough: the tanh GELU, a window one wider, base-10k rotary everywhere or a norm on
    layer 0 each move the logits by over 5x the tolerance."""
    torch.manual_seed(0)
    ours = loud(Transformer(ModelConfig.preset(family, **TINY)))
    hf = to_transformers(ours, family)
    for change in (dict(activation="geglu"), dict(local_attention=10), dict(local_rope_theta=None),
                   dict(first_attn_norm=True)):
        wrong = Transformer(dataclasses.replace(ours.config, **change)).eval()
        wrong.load_state_dict(ours.state_dict(), strict=False)
        assert diff(wrong, hf, batch()) > 5 * TOL, change


def test_presets_are_the_hub_configs():
    """answerdotai/ModernBERT-base and -large config.json values, written out."""
    for sizes, want in [({}, dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                                  intermediate_size=1152)),
                        (LARGE, dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                                     intermediate_size=2624))]:
        hf = to_hf_config("modernbert", ModelConfig.preset("modernbert", **sizes)).to_dict()
        common = dict(vocab_size=50368, max_position_embeddings=8192, hidden_activation="gelu",
                      classifier_activation="gelu", norm_eps=1e-5, norm_bias=False, attention_bias=False,
                      mlp_bias=False, classifier_bias=False, decoder_bias=True, local_attention=128,
                      initializer_range=0.02, initializer_cutoff_factor=2.0, pad_token_id=50283, bos_token_id=50281,
                      eos_token_id=50282, cls_token_id=50281, sep_token_id=50282, tie_word_embeddings=True,
                      attention_dropout=0.0, embedding_dropout=0.0, mlp_dropout=0.0)
        assert {k: hf[k] for k in {**want, **common}} == {**want, **common}
        assert hf["rope_parameters"]["full_attention"]["rope_theta"] == 160000.0
        assert hf["rope_parameters"]["sliding_attention"]["rope_theta"] == 10000.0
        assert [i for i, t in enumerate(hf["layer_types"]) if t == "full_attention"] == \
            list(range(0, want["num_hidden_layers"], 3))



@pytest.mark.parametrize("family", FAMILIES)
def test_base_and_large_have_the_parameters_of_the_transformers_classes(family):
    import transformers

    from models.transformer import num_params

    for sizes in ({}, LARGE):
        cfg = ModelConfig.preset(family, **sizes)
        with torch.device("meta"):
            hf = getattr(transformers, FAMILIES[family])(to_hf_config(family, cfg))
        assert num_params(cfg) == sum(p.numel() for p in hf.parameters())


def test_init_draws_truncated_normals_at_their_scales():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("modernbert", vocab_size=2000, d_model=256, n_layers=8, n_heads=4, d_ff=384)
    model = Transformer(cfg)
    out_std = 0.02 / (2 * 8) ** 0.5
    for tensor, std in [(model.tok_emb.weight, 0.02), (model.encoder.layers[0].self_attn.qkv.weight, 0.02),
                        (model.encoder.layers[0].ff.up.weight, 0.02), (model.encoder.layers[0].ff.down.weight, out_std),
                        (model.encoder.layers[0].self_attn.out.weight, out_std), (model.head_dense.weight, out_std)]:
        assert tensor.abs().max() <= 2 * std + 1e-9  # truncated at 2 std
        assert abs(tensor.std().item() / (0.8796 * std) - 1) < 0.05  # a normal truncated at +-2 has 0.8796 std
    assert isinstance(model.encoder.layers[0].self_norm, torch.nn.Identity)
    assert model.head_dense.bias is None and torch.equal(model.head_bias, torch.zeros(2000))


# ---- a 2-layer run of each trains, resumes exactly, exports and comes back -------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_two_layer_run_resumes_exactly_exports_and_imports(family, tmp_path, one_thread):
    import transformers
    from safetensors.torch import load_file

    from pretrain.export.command import export_main
    from pretrain.export.to_hf import export_run
    from pretrain.train.main import train_main
    from pretrain.train.saved_run import load_run_model
    from test_export import corpus, inputs
    from train_fixtures import family_run

    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(corpus() * 3))
    shape = {"--model.n_layers": 2, "--model.local_attention": 4, "--tokenizer.max_documents": 500,
             "--run.mixed_precision": "no"}  # layer 1 attends within +-2 tokens (2 latest in the decoder)
    straight = family_run(tmp_path / "a", family, text, tmp_path / "cache", 4, **shape)
    paused = family_run(tmp_path / "b", family, text, tmp_path / "cache", 4, **shape, **{"--run.stop_at_step": 2})
    assert not (paused / "final").exists()
    train_main(None, ["--run.output_dir", str(paused), "--resume"])
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(paused / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    model, cfg, tokenizer, _ = load_run_model(straight)
    assert cfg.n_layers == 2 and cfg.layer_is_local(1) and not cfg.layer_is_local(0)
    out = export_run(straight, tmp_path / "exported", log=lambda m: None)
    auto = transformers.AutoModelForMaskedLM if cfg.arch == "encoder" else transformers.AutoModelForCausalLM
    hf = auto.from_pretrained(out).eval()
    assert type(hf).__name__ == FAMILIES[family]
    batch = inputs(tokenizer, cfg, ("the quick brown fox jumps over the lazy dog a model learns", "a lazy dog"))
    with torch.no_grad():
        ours = model.logits(model(**batch))
        real = batch["attention_mask"].bool()
        assert (ours - hf(**batch).logits)[real].abs().max() < TOL
        run = tmp_path / "imported"
        assert export_main(["--from-hub", str(out), "--out", str(run)]) == 0
        back, back_cfg, _, _ = load_run_model(run)
        assert back_cfg.weight_differences(cfg) == []
        assert torch.equal(back.logits(back(**batch))[real], ours[real])


@pytest.mark.parametrize("objective", ["clm", "fim"])
def test_decoder_twin_learns_clm_and_fim(objective):
    """The decoder twin (2 layers, layer 1 local with a 4-token window) fits one batch of its objective."""
    import copy

    from objectives import build_objective
    from objectives.fim import FIM_TOKENS
    from objectives_fixtures import bpe, model_config, text_blocks, tiny_model, train_steps

    tok = copy.deepcopy(bpe())
    tok.add_special_tokens({"additional_special_tokens": list(FIM_TOKENS)})
    shape = dict(n_layers=2, local_attention=4)
    obj = build_objective(objective, tok, model_config("modernbert_decoder", tok, **shape))
    batch = obj.collate(text_blocks(tok, 4, 32), torch.Generator().manual_seed(0))
    losses = train_steps(obj, tiny_model("modernbert_decoder", tok, **shape), batch)
    assert losses[-1] < losses[0] - 1.0, losses


def test_window_follows_each_rows_kind_under_the_hybrids_causal_rows():
    """A causal stack with per-row attention (the GPT-BERT hybrid on a sliding-window decoder): a causal row keeps
    the decoder's band (its window // 2 latest keys), a bidirectional row the encoder's (|q - k| <= window // 2),
    both inside their document; the Flex block mask is the same mask."""
    rows = torch.tensor([True, False, False])
    padding = SEGMENTS >= 0
    mask, is_causal = build_mask(padding, 18, 18, True, None, SEGMENTS, SEGMENTS, rows)
    got, _ = local_mask(mask, is_causal, 18, 6, True, causal_rows=rows)
    i, j = torch.arange(18)[:, None], torch.arange(18)[None, :]
    same_doc = (SEGMENTS[:, :, None] == SEGMENTS[:, None, :]) & padding[:, None, :]
    latest = (i - j >= 0) & (i - j < 3)
    both_sides = (i - j).abs() <= 3
    for b, causal in enumerate(rows.tolist()):
        want = same_doc[b] & (latest if causal else both_sides)
        real = padding[b]
        assert torch.equal(got[b, 0][real], want[real]), b
    block = document_block_mask(SEGMENTS, SEGMENTS, padding, True, rows, window=6)
    flex = create_mask(block.mask_mod, 3, 1, 18, 18, device="cpu")
    assert torch.equal(flex, got.expand_as(flex))
