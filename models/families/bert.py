"""BERT (Devlin et al.): post-norm encoder, learned positions, token types, embedding LayerNorm, exact GELU, an MLM
head transform and a tied decoder with its own bias. <-> transformers BertForMaskedLM."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import Family, register_family
from ..init import normal_init, zero_padding_row
from .mapping import (ACT_TO_HF, Fuse, activation_from_hf, any_value, attention_dropout, dropouts, entry, linear, norm,
                      one_of, plain_heads, qkv_sizes, token_embeddings)

PRESET = dict(arch="encoder", position="learned", norm="layernorm", norm_eps=1e-12, norm_placement="post",
              embedding_norm=True, activation="gelu", type_vocab_size=2, head_transform=True, head_bias=True,
              tie_embeddings=True, init="bert", pad_token_id=0)


def init(model, cfg) -> None:
    normal_init(model, cfg)
    zero_padding_row(model, cfg)


L = "bert.encoder.layer.{i}"
TABLE = [
    *token_embeddings("bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"),
    entry("type_emb.weight", "bert.embeddings.token_type_embeddings.weight"),
    entry("encoder.pos_emb.weight", "bert.embeddings.position_embeddings.weight"),
    *norm("encoder.emb_norm", "bert.embeddings.LayerNorm"),
    *linear("encoder.layers.{i}.self_attn.qkv",
            [f"{L}.attention.self.query", f"{L}.attention.self.key", f"{L}.attention.self.value"], Fuse(qkv_sizes)),
    *linear("encoder.layers.{i}.self_attn.out", f"{L}.attention.output.dense"),
    *norm("encoder.layers.{i}.self_norm", f"{L}.attention.output.LayerNorm"),
    *linear("encoder.layers.{i}.ff.up", f"{L}.intermediate.dense"),
    *linear("encoder.layers.{i}.ff.down", f"{L}.output.dense"),
    *norm("encoder.layers.{i}.ff_norm", f"{L}.output.LayerNorm"),
    *linear("head_dense", "cls.predictions.transform.dense"),
    *norm("head_norm", "cls.predictions.transform.LayerNorm"),
    # the decoder's bias is the one the forward uses (tied to cls.predictions.bias unless the head is untied)
    entry("head_bias", ["cls.predictions.decoder.bias", "cls.predictions.bias"]),
]
IGNORE = [r"position_ids$", r"token_type_ids$"]  # buffers of older checkpoints
TEXT_TEMPLATE = ("{cls} $A {sep}", "{cls} $A {sep} $B:1 {sep}:1")  # BertTokenizer

FREE = {"norm_eps": any_value, "activation": one_of(*ACT_TO_HF), "type_vocab_size": lambda v: v >= 1,
        "tie_embeddings": any_value}


def unsupported(cfg: ModelConfig) -> list[str]:
    return plain_heads(cfg)


def hf_fields(cfg: ModelConfig) -> dict:
    """The transformers config fields of a BERT-layout encoder (BertConfig, ElectraConfig share them)."""
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff, hidden_act=ACT_TO_HF[cfg.activation],
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=attention_dropout(cfg),
        max_position_embeddings=cfg.max_seq_len, type_vocab_size=cfg.type_vocab_size,
        initializer_range=cfg.init_std, layer_norm_eps=cfg.norm_eps, pad_token_id=cfg.pad_token_id,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id)


def fields_from_hf(hf, title: str) -> dict:
    """ModelConfig fields of a BERT-layout transformers config (BERT, ELECTRA); absolute positions only."""
    if getattr(hf, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{title} position_embedding_type {hf.position_embedding_type!r} is not supported; "
                         f"only 'absolute'")
    return dict(
        vocab_size=hf.vocab_size, d_model=hf.hidden_size, n_layers=hf.num_hidden_layers,
        n_heads=hf.num_attention_heads, d_ff=hf.intermediate_size,
        activation=activation_from_hf(hf.hidden_act, title),
        **dropouts(hf.hidden_dropout_prob, hf.attention_probs_dropout_prob),
        max_seq_len=hf.max_position_embeddings, type_vocab_size=hf.type_vocab_size,
        init_std=hf.initializer_range, norm_eps=hf.layer_norm_eps,
        pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0,
        bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id)


def to_hf_config(cfg: ModelConfig):
    from transformers import BertConfig

    return BertConfig(**hf_fields(cfg), tie_word_embeddings=cfg.tie_embeddings)


def from_hf_config(hf) -> ModelConfig:
    if getattr(hf, "is_decoder", False):
        raise ValueError("a BERT configured as a decoder (is_decoder=True) is not supported; use gpt2 or llama")
    return ModelConfig.preset("bert", **fields_from_hf(hf, "BERT"),
                              tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)))


register_family(Family(
    name="bert", title="BERT", preset=PRESET, init=init, default_objective="mlm", hf_class="BertForMaskedLM",
    model_type="bert", table=tuple(TABLE), ignore=tuple(IGNORE), free=FREE, unsupported=unsupported,
    to_hf_config=to_hf_config, from_hf_config=from_hf_config, text_template=TEXT_TEMPLATE))
