"""BART: post-norm encoder-decoder with an embedding LayerNorm per stack, learned positions with 2 extra leading rows
(our pos_emb has them too: position_offset=2), exact GELU, shared tied embeddings plus final_logits_bias ([1, vocab]
in transformers, our head_bias); the decoder starts with </s>. <-> transformers BartForConditionalGeneration."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import Family, register_family
from ..init import normal_init, zero_padding_row
from .mapping import (ACT_TO_HF, Fuse, Reshape, activation_from_hf, any_value, attention_dropout, dropouts, entry,
                      kv_sizes, linear, norm, one_of, plain_heads, qkv_sizes, token_embeddings)

PRESET = dict(arch="encoder-decoder", vocab_size=50265, n_layers=6, n_heads=12, max_seq_len=1024,
              position="learned", position_offset=2, norm="layernorm", norm_eps=1e-5, norm_placement="post",
              embedding_norm=True, activation="gelu", head_bias=True, tie_embeddings=True, init="bart",
              pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)


def init(model, cfg) -> None:
    normal_init(model, cfg)
    zero_padding_row(model, cfg)


EMBEDDINGS = ["model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"]


def _stack(side: str) -> list:
    L, s = f"model.{side}.layers.{{i}}", f"{side}.layers.{{i}}"
    rows = [
        entry(f"{side}.pos_emb.weight", f"model.{side}.embed_positions.weight"),
        *norm(f"{side}.emb_norm", f"model.{side}.layernorm_embedding"),
        *linear(f"{s}.self_attn.qkv", [f"{L}.self_attn.q_proj", f"{L}.self_attn.k_proj", f"{L}.self_attn.v_proj"],
                Fuse(qkv_sizes)),
        *linear(f"{s}.self_attn.out", f"{L}.self_attn.out_proj"),
        *norm(f"{s}.self_norm", f"{L}.self_attn_layer_norm"),
        *linear(f"{s}.ff.up", f"{L}.fc1"),
        *linear(f"{s}.ff.down", f"{L}.fc2"),
        *norm(f"{s}.ff_norm", f"{L}.final_layer_norm"),
    ]
    if side == "decoder":
        rows += [
            *linear(f"{s}.cross_attn.q", f"{L}.encoder_attn.q_proj"),
            *linear(f"{s}.cross_attn.kv", [f"{L}.encoder_attn.k_proj", f"{L}.encoder_attn.v_proj"], Fuse(kv_sizes)),
            *linear(f"{s}.cross_attn.out", f"{L}.encoder_attn.out_proj"),
            *norm(f"{s}.cross_norm", f"{L}.encoder_attn_layer_norm"),
        ]
    return rows


TABLE = [
    *token_embeddings(EMBEDDINGS, "lm_head.weight"),
    entry("head_bias", "final_logits_bias", Reshape(lambda c: (1, c.vocab_size))),
    *_stack("encoder"),
    *_stack("decoder"),
]
IGNORE = []
TEXT_TEMPLATE = ("{cls} $A {sep}", "{cls} $A {sep} {sep} $B:1 {sep}:1")  # BartTokenizer (RoBERTa's)

FREE = {"activation": one_of(*ACT_TO_HF), "scale_embeddings": any_value, "tie_embeddings": any_value}


def unsupported(cfg: ModelConfig) -> list[str]:
    return plain_heads(cfg)


def to_hf_config(cfg: ModelConfig):
    from transformers import BartConfig

    return BartConfig(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, encoder_layers=cfg.n_layers,
        decoder_layers=cfg.decoder_layers, encoder_attention_heads=cfg.n_heads, decoder_attention_heads=cfg.n_heads,
        encoder_ffn_dim=cfg.d_ff, decoder_ffn_dim=cfg.d_ff, activation_function=ACT_TO_HF[cfg.activation],
        dropout=cfg.dropout, attention_dropout=attention_dropout(cfg), activation_dropout=cfg.activation_dropout_rate,
        max_position_embeddings=cfg.max_seq_len, init_std=cfg.init_std, scale_embedding=cfg.scale_embeddings,
        pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
        decoder_start_token_id=cfg.decoder_start_token_id, forced_eos_token_id=cfg.eos_token_id,
        tie_word_embeddings=cfg.tie_embeddings)


def from_hf_config(hf) -> ModelConfig:
    if hf.encoder_attention_heads != hf.decoder_attention_heads or hf.encoder_ffn_dim != hf.decoder_ffn_dim:
        raise ValueError("BART with different encoder and decoder heads or ffn dims is not supported; "
                         "our stacks share n_heads and d_ff")
    return ModelConfig.preset(
        "bart", vocab_size=hf.vocab_size, d_model=hf.d_model, n_layers=hf.encoder_layers,
        n_decoder_layers=None if hf.decoder_layers == hf.encoder_layers else hf.decoder_layers,
        n_heads=hf.encoder_attention_heads, d_ff=hf.encoder_ffn_dim,
        activation=activation_from_hf(hf.activation_function, "BART"),
        **dropouts(hf.dropout, hf.attention_dropout), activation_dropout=float(hf.activation_dropout) or None,
        max_seq_len=hf.max_position_embeddings,
        init_std=hf.init_std, scale_embeddings=bool(hf.scale_embedding),
        pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 1, bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id, decoder_start_token_id=hf.decoder_start_token_id,
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)))


register_family(Family(
    name="bart", title="BART", preset=PRESET, init=init, default_objective="infill",
    hf_class="BartForConditionalGeneration", model_type="bart", table=tuple(TABLE), ignore=tuple(IGNORE), free=FREE,
    unsupported=unsupported, to_hf_config=to_hf_config, from_hf_config=from_hf_config, text_template=TEXT_TEMPLATE))
