"""ModernBERT's decoder twin (Ettin, Weller et al., 2025): ModernBERT's layers, head and initialization under a
causal mask; a sliding-window layer sees the local_attention // 2 latest tokens, itself included (transformers'
ModernBertDecoder convention). <-> transformers ModernBertDecoderForCausalLM, whose attention keeps q, k and v as
three projections (fused into our one qkv)."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import Family, register_family
from .mapping import Fuse, linear, qkv_sizes
from .modernbert import FREE, IGNORE, PRESET as ENCODER, fields_from_hf, hf_fields, init, model_table, unsupported

PRESET = dict(ENCODER, arch="decoder", init="modernbert")

A = "model.layers.{i}.attn"
TABLE = model_table("decoder", "lm_head", linear("decoder.layers.{i}.self_attn.qkv",
                                                 [f"{A}.q_proj", f"{A}.k_proj", f"{A}.v_proj"], Fuse(qkv_sizes)))


def to_hf_config(cfg: ModelConfig):
    from transformers import ModernBertDecoderConfig

    return ModernBertDecoderConfig(**hf_fields(cfg))


def from_hf_config(hf) -> ModelConfig:
    return ModelConfig.preset("modernbert_decoder", **fields_from_hf(hf, "ModernBERT decoder"))


register_family(Family(
    name="modernbert_decoder", title="ModernBERT decoder", preset=PRESET, init=init, default_objective="clm",
    hf_class="ModernBertDecoderForCausalLM", model_type="modernbert-decoder", table=tuple(TABLE),
    ignore=tuple(IGNORE), free=FREE, unsupported=unsupported, to_hf_config=to_hf_config,
    from_hf_config=from_hf_config))
