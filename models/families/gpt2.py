"""GPT-2: pre-norm decoder with a final LayerNorm, learned positions, tanh GELU, a tied head without bias, residual
projections initialized smaller. <-> transformers GPT2LMHeadModel (Conv1D weights are [in, out])."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import Family, register_family
from ..init import normal_init, scale_residual_projections
from .mapping import (ACT_TO_HF, Transpose, activation_from_hf, any_value, attention_dropout, entry, linear, norm,
                      one_of, plain_heads, token_embeddings)

PRESET = dict(arch="decoder", vocab_size=50257, max_seq_len=1024, position="learned", norm="layernorm",
              norm_eps=1e-5, norm_placement="pre", activation="gelu_tanh", tie_embeddings=True, init="gpt2",
              bos_token_id=50256, eos_token_id=50256, pad_token_id=50256)


def init(model, cfg) -> None:
    normal_init(model, cfg)
    scale_residual_projections(model, cfg)


L = "transformer.h.{i}"
CONV1D = Transpose()  # c_attn already holds q, k, v concatenated on the output dim, as our qkv does
TABLE = [
    *token_embeddings("transformer.wte.weight", "lm_head.weight"),
    entry("decoder.pos_emb.weight", "transformer.wpe.weight"),
    *norm("decoder.layers.{i}.self_norm", f"{L}.ln_1"),
    *linear("decoder.layers.{i}.self_attn.qkv", f"{L}.attn.c_attn", CONV1D),
    *linear("decoder.layers.{i}.self_attn.out", f"{L}.attn.c_proj", CONV1D),
    *norm("decoder.layers.{i}.ff_norm", f"{L}.ln_2"),
    *linear("decoder.layers.{i}.ff.up", f"{L}.mlp.c_fc", CONV1D),
    *linear("decoder.layers.{i}.ff.down", f"{L}.mlp.c_proj", CONV1D),
    *norm("decoder.final_norm", "transformer.ln_f"),
]
IGNORE = [r"\.attn\.bias$", r"\.attn\.masked_bias$"]  # causal-mask buffers of older checkpoints
# GPT2Tokenizer adds nothing (add_bos_token=False): a prompt is continued, not closed by an end of document
TEXT_TEMPLATE = ("$A", "$A $B:1")

FREE = {"norm_eps": any_value, "activation": one_of(*ACT_TO_HF), "tie_embeddings": any_value}


def unsupported(cfg: ModelConfig) -> list[str]:
    return plain_heads(cfg)


def to_hf_config(cfg: ModelConfig):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.d_ff, activation_function=ACT_TO_HF[cfg.activation],
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=attention_dropout(cfg),
        layer_norm_epsilon=cfg.norm_eps, initializer_range=cfg.init_std, bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, tie_word_embeddings=cfg.tie_embeddings)


def from_hf_config(hf) -> ModelConfig:
    if not getattr(hf, "scale_attn_weights", True) or getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("GPT-2 with scale_attn_weights=False or scale_attn_by_inverse_layer_idx=True is not "
                         "supported; only the standard 1/sqrt(head_dim) attention scale")
    if getattr(hf, "add_cross_attention", False):
        raise ValueError("GPT-2 with cross-attention (add_cross_attention=True) is not supported")
    dropout = float(hf.resid_pdrop)
    pad = hf.pad_token_id if hf.pad_token_id is not None else (hf.eos_token_id or 0)
    return ModelConfig.preset(
        "gpt2", vocab_size=hf.vocab_size, max_seq_len=hf.n_positions, d_model=hf.n_embd, n_layers=hf.n_layer,
        n_heads=hf.n_head, d_ff=hf.n_inner or 4 * hf.n_embd,
        activation=activation_from_hf(hf.activation_function, "GPT-2"), dropout=dropout,
        attention_dropout=None if hf.attn_pdrop == dropout else float(hf.attn_pdrop),
        norm_eps=hf.layer_norm_epsilon, init_std=hf.initializer_range, bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id, pad_token_id=pad,
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)))


register_family(Family(
    name="gpt2", title="GPT-2", preset=PRESET, init=init, default_objective="clm", hf_class="GPT2LMHeadModel",
    model_type="gpt2", table=tuple(TABLE), ignore=tuple(IGNORE), free=FREE, unsupported=unsupported,
    to_hf_config=to_hf_config, from_hf_config=from_hf_config, text_template=TEXT_TEMPLATE))
