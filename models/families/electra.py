"""ELECTRA's discriminator (Clark et al., 2020): BERT's post-norm encoder with a replaced-token-detection head of
one logit per token (dense, activation, dense to 1; no norm) instead of the MLM head. <-> transformers
ElectraForPreTraining with embedding_size = hidden_size. Its generator belongs to the objective (objectives/electra.py),
which trains and exports it."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import Family, register_family
from .bert import PRESET as BERT, init
from .mapping import (ACT_TO_HF, Fuse, activation_from_hf, any_value, attention_dropout, dropouts, entry, linear, norm,
                      one_of, plain_heads, qkv_sizes)

PRESET = dict(BERT, head_norm=False, head_outputs=1, tie_embeddings=False, init="electra")


def encoder_table(prefix: str) -> list:
    """BERT's embeddings and layers under `prefix` (ELECTRA's discriminator and generator share this layout)."""
    layer = f"{prefix}.encoder.layer.{{i}}"
    return [
        entry("tok_emb.weight", f"{prefix}.embeddings.word_embeddings.weight"),
        entry("type_emb.weight", f"{prefix}.embeddings.token_type_embeddings.weight"),
        entry("encoder.pos_emb.weight", f"{prefix}.embeddings.position_embeddings.weight"),
        *norm("encoder.emb_norm", f"{prefix}.embeddings.LayerNorm"),
        *layer_table("encoder.layers.{i}", layer),
    ]


def layer_table(ours: str, hf: str) -> list:
    """One BERT layer: our `ours` <-> transformers' `hf` (both with {i})."""
    return [
        *linear(f"{ours}.self_attn.qkv", [f"{hf}.attention.self.query", f"{hf}.attention.self.key",
                                           f"{hf}.attention.self.value"], Fuse(qkv_sizes)),
        *linear(f"{ours}.self_attn.out", f"{hf}.attention.output.dense"),
        *norm(f"{ours}.self_norm", f"{hf}.attention.output.LayerNorm"),
        *linear(f"{ours}.ff.up", f"{hf}.intermediate.dense"),
        *linear(f"{ours}.ff.down", f"{hf}.output.dense"),
        *norm(f"{ours}.ff_norm", f"{hf}.output.LayerNorm"),
    ]


TABLE = [
    *encoder_table("electra"),
    *linear("head_dense", "discriminator_predictions.dense"),
    entry("head.weight", "discriminator_predictions.dense_prediction.weight"),
    entry("head_bias", "discriminator_predictions.dense_prediction.bias"),
]
IGNORE = [r"position_ids$", r"token_type_ids$"]

FREE = {"norm_eps": any_value, "activation": one_of(*ACT_TO_HF), "type_vocab_size": lambda v: v >= 1}


def unsupported(cfg: ModelConfig) -> list[str]:
    return plain_heads(cfg)


def hf_config(cfg: ModelConfig, **sizes):
    """An ElectraConfig of cfg's settings; `sizes` override the widths (the generator's)."""
    from transformers import ElectraConfig

    values = dict(
        vocab_size=cfg.vocab_size, embedding_size=cfg.d_model, hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff,
        hidden_act=ACT_TO_HF[cfg.activation], hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=attention_dropout(cfg), max_position_embeddings=cfg.max_seq_len,
        type_vocab_size=cfg.type_vocab_size, initializer_range=cfg.init_std, layer_norm_eps=cfg.norm_eps,
        pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id)
    return ElectraConfig(**{**values, **sizes})


def from_hf_config(hf) -> ModelConfig:
    if "ElectraForMaskedLM" in (getattr(hf, "architectures", None) or []):
        raise ValueError("this is an ELECTRA generator (ElectraForMaskedLM); import the discriminator "
                         "(ElectraForPreTraining), the model ELECTRA pretrains")
    if hf.embedding_size != hf.hidden_size:
        raise ValueError(f"ELECTRA with embedding_size {hf.embedding_size} != hidden_size {hf.hidden_size} (an "
                         f"embeddings_project) is not supported for the discriminator; only equal sizes")
    if getattr(hf, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"ELECTRA position_embedding_type {hf.position_embedding_type!r} is not supported; "
                         f"only 'absolute'")
    return ModelConfig.preset(
        "electra", vocab_size=hf.vocab_size, d_model=hf.hidden_size, n_layers=hf.num_hidden_layers,
        n_heads=hf.num_attention_heads, d_ff=hf.intermediate_size,
        activation=activation_from_hf(hf.hidden_act, "ELECTRA"),
        **dropouts(hf.hidden_dropout_prob, hf.attention_probs_dropout_prob),
        max_seq_len=hf.max_position_embeddings, type_vocab_size=hf.type_vocab_size,
        init_std=hf.initializer_range, norm_eps=hf.layer_norm_eps,
        pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0,
        bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id)


register_family(Family(
    name="electra", title="ELECTRA", preset=PRESET, init=init, default_objective="electra",
    hf_class="ElectraForPreTraining", model_type="electra", table=tuple(TABLE), ignore=tuple(IGNORE), free=FREE,
    unsupported=unsupported, to_hf_config=hf_config, from_hf_config=from_hf_config))
