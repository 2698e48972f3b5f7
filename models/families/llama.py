"""Llama: RMSNorm pre-norm decoder, rotary positions, SwiGLU, no biases, untied head, grouped-query heads.
<-> transformers LlamaForCausalLM.

Our rotary embedding uses the split-halves (rotate_half) layout, as transformers does, so q/k rows need no
permutation (the parity test proves it)."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import Family, register_family
from ..init import normal_init
from .mapping import (Fuse, any_value, attention_dropout, gate_up_sizes, linear, norm, one_of, qkv_sizes,
                      token_embeddings)

PRESET = dict(arch="decoder", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
              max_seq_len=2048, position="rotary", norm="rmsnorm", norm_eps=1e-6, norm_placement="pre",
              activation="swiglu", bias=False, dropout=0.0, tie_embeddings=False, init="llama",
              bos_token_id=1, eos_token_id=2, pad_token_id=0)

L = "model.layers.{i}"
TABLE = [
    *token_embeddings("model.embed_tokens.weight", "lm_head.weight"),
    *norm("decoder.layers.{i}.self_norm", f"{L}.input_layernorm"),
    *linear("decoder.layers.{i}.self_attn.qkv",
            [f"{L}.self_attn.q_proj", f"{L}.self_attn.k_proj", f"{L}.self_attn.v_proj"], Fuse(qkv_sizes)),
    *linear("decoder.layers.{i}.self_attn.out", f"{L}.self_attn.o_proj"),
    *norm("decoder.layers.{i}.ff_norm", f"{L}.post_attention_layernorm"),
    *linear("decoder.layers.{i}.ff.up", [f"{L}.mlp.gate_proj", f"{L}.mlp.up_proj"], Fuse(gate_up_sizes)),
    *linear("decoder.layers.{i}.ff.down", f"{L}.mlp.down_proj"),
    *norm("decoder.final_norm", "model.norm"),
]
IGNORE = [r"rotary_emb\.inv_freq$"]
TEXT_TEMPLATE = ("{bos} $A", "{bos} $A {bos}:1 $B:1")  # LlamaTokenizer: add_bos_token=True, add_eos_token=False

HIDDEN_ACT = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh"}  # the gate's activation
ACT_FROM_HF = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu", "gelu_new": "geglu"}
FREE = {"norm_eps": any_value, "activation": one_of(*HIDDEN_ACT), "tie_embeddings": any_value,
        "bias": any_value}


def unsupported(cfg: ModelConfig) -> list[str]:
    return []


def to_hf_config(cfg: ModelConfig):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.dim_head, hidden_act=HIDDEN_ACT[cfg.activation], max_position_embeddings=cfg.max_seq_len,
        initializer_range=cfg.init_std, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=cfg.bias, mlp_bias=cfg.bias, attention_dropout=attention_dropout(cfg),
        pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
        tie_word_embeddings=cfg.tie_embeddings)


def legacy_config(cfg: ModelConfig) -> dict:
    """transformers 4.x reads rope_theta at the top level (5.x: rope_parameters) and would take its default."""
    return {"rope_theta": cfg.rope_theta}


def _rope_theta(hf) -> float:
    rope = getattr(hf, "rope_parameters", None) or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"Llama rope_type {kind!r} (RoPE scaling) is not supported; only 'default'")
    return float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0)))


def from_hf_config(hf) -> ModelConfig:
    if hf.hidden_act not in ACT_FROM_HF:
        raise ValueError(f"Llama hidden_act {hf.hidden_act!r} is not supported; use silu or gelu_pytorch_tanh")
    if bool(getattr(hf, "attention_bias", False)) != bool(getattr(hf, "mlp_bias", False)):
        raise ValueError("Llama with attention_bias != mlp_bias is not supported; our bias switch covers both")
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    kv = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    return ModelConfig.preset(
        "llama", vocab_size=hf.vocab_size, d_model=hf.hidden_size, d_ff=hf.intermediate_size,
        n_layers=hf.num_hidden_layers, n_heads=hf.num_attention_heads,
        n_kv_heads=None if kv == hf.num_attention_heads else kv,
        head_dim=None if head_dim * hf.num_attention_heads == hf.hidden_size else head_dim,
        activation=ACT_FROM_HF[hf.hidden_act], max_seq_len=hf.max_position_embeddings,
        init_std=hf.initializer_range, norm_eps=hf.rms_norm_eps, rope_theta=_rope_theta(hf),
        bias=bool(getattr(hf, "attention_bias", False)), dropout=0.0,
        attention_dropout=float(hf.attention_dropout) or None,
        pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0, bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id, tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)))


register_family(Family(
    name="llama", title="Llama", preset=PRESET, init=normal_init, default_objective="clm", hf_class="LlamaForCausalLM",
    model_type="llama", table=tuple(TABLE), ignore=tuple(IGNORE), free=FREE, unsupported=unsupported,
    to_hf_config=to_hf_config, from_hf_config=from_hf_config, text_template=TEXT_TEMPLATE,
    legacy_config=legacy_config))
