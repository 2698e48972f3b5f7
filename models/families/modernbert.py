"""ModernBERT (Warner et al., 2024): a pre-norm encoder without biases, GeGLU (exact GELU), rotary positions with a
base of 160k on the global layers and 10k on the sliding-window layers, global attention every third layer and a
128-token window (64 either side) elsewhere, an embedding norm standing in for layer 0's attention norm, and BERT's
prediction head (dense, GELU, norm) before a tied decoder with its own bias. <-> transformers ModernBertForMaskedLM.

The preset is ModernBERT-base (answerdotai/ModernBERT-base's config.json, transformers' ModernBertConfig defaults);
`ModelConfig.preset("modernbert", **LARGE)` is ModernBERT-large. The decoder twin (Ettin, transformers'
ModernBertDecoderForCausalLM) shares everything but the causal mask and lives in modernbert_decoder.py."""
from __future__ import annotations

import math

import torch.nn as nn

from ..attention import Attention
from ..config import ModelConfig
from ..family import Family, register_family
from ..layers import FeedForward
from .mapping import any_value, attention_dropout, entry, linear, norm, one_of, plain_heads

PRESET = dict(arch="encoder", vocab_size=50368, d_model=768, n_layers=22, n_heads=12, d_ff=1152, max_seq_len=8192,
              position="rotary", rope_theta=160000.0, local_rope_theta=10000.0, local_attention=128,
              global_attn_every_n_layers=3, norm="layernorm", norm_eps=1e-5, norm_placement="pre",
              embedding_norm=True, first_attn_norm=False, activation="geglu_exact", bias=False, dropout=0.0,
              tie_embeddings=True, head_transform=True, head_bias=True, init="modernbert", init_std=0.02,
              pad_token_id=50283, bos_token_id=50281, eos_token_id=50282)
# answerdotai/ModernBERT-large's sizes (everything else as the base preset)
LARGE = dict(d_model=1024, n_layers=28, n_heads=16, d_ff=2624)
CUTOFF = 2.0  # initializer_cutoff_factor: weights are drawn from a normal truncated at +-2 std


def init(model, cfg) -> None:
    """ModernBERT's "full_megatron" scheme (its src/bert_layers/initialization.py, transformers' _init_weights):
    truncated normals of std init_std for embeddings and input projections, init_std / sqrt(2 * layers) for the
    projections into the residual stream, the head's dense and an untied decoder; zero biases, unit norms."""
    std_in, std_out = cfg.init_std, cfg.init_std / math.sqrt(2.0 * cfg.n_layers)

    def draw(linear_or_embedding, std):
        nn.init.trunc_normal_(linear_or_embedding.weight, 0.0, std, -CUTOFF * std, CUTOFF * std)
        if getattr(linear_or_embedding, "bias", None) is not None:
            nn.init.zeros_(linear_or_embedding.bias)

    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, Attention):
            draw(module.q if module.cross else module.qkv, std_in)
            if module.cross:
                draw(module.kv, std_in)
            draw(module.out, std_out)
        elif isinstance(module, FeedForward):
            draw(module.up, std_in)
            draw(module.down, std_out)
    draw(model.tok_emb, std_in)
    if model.type_emb is not None:
        draw(model.type_emb, std_in)
    for name in ("head_dense", "head"):
        if getattr(model, name) is not None:
            draw(getattr(model, name), std_out)
    if model.head_bias is not None:
        nn.init.zeros_(model.head_bias)


def layer_table(stack: str, layer: str, attention: list) -> list:
    """One pre-norm layer of our `stack` <-> transformers' `layer` (both with {i}); layer 0 has no attention norm."""
    ours = f"{stack}.layers.{{i}}"
    return [
        *norm(f"{ours}.self_norm", f"{layer}.attn_norm", first_layer=1),
        *attention,
        *linear(f"{ours}.self_attn.out", f"{layer}.attn.Wo"),
        *norm(f"{ours}.ff_norm", f"{layer}.mlp_norm"),
        *linear(f"{ours}.ff.up", f"{layer}.mlp.Wi"),  # [input | gate]: the first half is activated, as ours
        *linear(f"{ours}.ff.down", f"{layer}.mlp.Wo"),
    ]


def model_table(stack: str, head: str, attention: list) -> list:
    """Embeddings, layers, final norm, prediction head (`head`.dense / .norm) and the decoder with its bias."""
    return [
        entry("tok_emb.weight", ["model.embeddings.tok_embeddings.weight", "decoder.weight"],
              when=lambda c: c.tie_embeddings),
        entry("tok_emb.weight", "model.embeddings.tok_embeddings.weight", when=lambda c: not c.tie_embeddings),
        entry("head.weight", "decoder.weight", when=lambda c: not c.tie_embeddings),
        *norm(f"{stack}.emb_norm", "model.embeddings.norm"),
        *layer_table(stack, "model.layers.{i}", attention),
        *norm(f"{stack}.final_norm", "model.final_norm"),
        *linear("head_dense", f"{head}.dense"),
        *norm("head_norm", f"{head}.norm"),
        entry("head_bias", "decoder.bias", when=lambda c: c.head_bias),
    ]


TABLE = model_table("encoder", "head", linear("encoder.layers.{i}.self_attn.qkv", "model.layers.{i}.attn.Wqkv"))
IGNORE = [r"inv_freq$"]

HIDDEN_ACT = {"geglu_exact": "gelu", "geglu": "gelu_pytorch_tanh"}  # the gate's activation, also the head's
ACT_FROM_HF = {"gelu": "geglu_exact", "gelu_pytorch_tanh": "geglu", "gelu_new": "geglu"}
FREE = {"norm_eps": any_value, "activation": one_of(*HIDDEN_ACT), "tie_embeddings": any_value,
        "head_bias": any_value, "local_attention": any_value, "global_attn_every_n_layers": any_value,
        "local_rope_theta": any_value}


def unsupported(cfg: ModelConfig) -> list[str]:
    return plain_heads(cfg)


def layer_types(cfg: ModelConfig) -> list[str]:
    return ["sliding_attention" if cfg.layer_is_local(i) else "full_attention" for i in range(cfg.n_layers)]


def hf_fields(cfg: ModelConfig) -> dict:
    """The config fields ModernBertConfig and ModernBertDecoderConfig share."""
    local_theta = cfg.local_rope_theta if cfg.local_rope_theta is not None else cfg.rope_theta
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, hidden_activation=HIDDEN_ACT[cfg.activation],
        classifier_activation=HIDDEN_ACT[cfg.activation], max_position_embeddings=cfg.max_seq_len,
        initializer_range=cfg.init_std, initializer_cutoff_factor=CUTOFF, norm_eps=cfg.norm_eps,
        norm_bias=cfg.bias, attention_bias=cfg.bias, mlp_bias=cfg.bias, classifier_bias=cfg.bias,
        decoder_bias=cfg.head_bias, attention_dropout=attention_dropout(cfg), embedding_dropout=cfg.dropout,
        mlp_dropout=cfg.activation_dropout_rate, local_attention=cfg.local_attention or PRESET["local_attention"],
        layer_types=layer_types(cfg),
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                         "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}},
        pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
        cls_token_id=cfg.bos_token_id, sep_token_id=cfg.eos_token_id, tie_word_embeddings=cfg.tie_embeddings)


def _global_every(types: list[str], title: str) -> int:
    """global_attn_every_n_layers of a layer_types list (layer i global when i % n == 0): ModernBERT's 3 when it
    gives the list (a 2-layer model's [full, sliding] does), else the smallest n that does; refuses other patterns."""
    full = [kind == "full_attention" for kind in types]
    for n in (PRESET["global_attn_every_n_layers"], *range(1, len(types) + 1)):
        if full == [i % n == 0 for i in range(len(types))]:
            return n
    raise ValueError(f"{title} layer_types {types} is not 'global every n layers from layer 0'; only that "
                     f"pattern is supported")


def _rope_theta(hf, kind: str, title: str) -> float:
    rope = (getattr(hf, "rope_parameters", None) or {}).get(kind) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"{title} rope_type {rope['rope_type']!r} (RoPE scaling) is not supported; only 'default'")
    return float(rope["rope_theta"])


def fields_from_hf(hf, title: str) -> dict:
    """ModelConfig fields of a ModernBertConfig / ModernBertDecoderConfig (refusing what our backbone lacks)."""
    if hf.hidden_activation not in ACT_FROM_HF:
        raise ValueError(f"{title} hidden_activation {hf.hidden_activation!r} is not supported; use gelu or "
                         f"gelu_pytorch_tanh")
    if ACT_FROM_HF.get(hf.classifier_activation) != ACT_FROM_HF[hf.hidden_activation]:
        raise ValueError(f"{title} with classifier_activation {hf.classifier_activation!r} != hidden_activation "
                         f"{hf.hidden_activation!r} is not supported; our head uses the layers' activation")
    biases = {k: bool(getattr(hf, k)) for k in ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias")}
    if len(set(biases.values())) > 1:
        raise ValueError(f"{title} with mixed biases ({biases}) is not supported; our bias switch covers all four")
    dropout = float(hf.embedding_dropout)
    return dict(
        vocab_size=hf.vocab_size, d_model=hf.hidden_size, d_ff=hf.intermediate_size, n_layers=hf.num_hidden_layers,
        n_heads=hf.num_attention_heads, activation=ACT_FROM_HF[hf.hidden_activation],
        max_seq_len=hf.max_position_embeddings, init_std=hf.initializer_range, norm_eps=hf.norm_eps,
        bias=biases["norm_bias"], head_bias=bool(hf.decoder_bias), dropout=dropout,
        attention_dropout=None if hf.attention_dropout == dropout else float(hf.attention_dropout),
        activation_dropout=None if hf.mlp_dropout == dropout else float(hf.mlp_dropout),
        local_attention=int(hf.local_attention), global_attn_every_n_layers=_global_every(hf.layer_types, title),
        rope_theta=_rope_theta(hf, "full_attention", title),
        local_rope_theta=_rope_theta(hf, "sliding_attention", title),
        pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0, bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id, tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)))


def to_hf_config(cfg: ModelConfig):
    from transformers import ModernBertConfig

    return ModernBertConfig(**hf_fields(cfg))


def from_hf_config(hf) -> ModelConfig:
    return ModelConfig.preset("modernbert", **fields_from_hf(hf, "ModernBERT"))


register_family(Family(
    name="modernbert", title="ModernBERT", preset=PRESET, init=init, default_objective="mlm",
    hf_class="ModernBertForMaskedLM", model_type="modernbert", table=tuple(TABLE), ignore=tuple(IGNORE), free=FREE,
    unsupported=unsupported, to_hf_config=to_hf_config, from_hf_config=from_hf_config))
