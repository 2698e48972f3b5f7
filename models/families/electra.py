"""ELECTRA's discriminator (Clark et al., 2020): BERT's post-norm encoder with a replaced-token-detection head of
one logit per token (dense, activation, dense to 1; no norm) instead of the MLM head. <-> transformers
ElectraForPreTraining with embedding_size = hidden_size. Its generator belongs to the objective (objectives/electra.py),
which trains and exports it."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import Family, register_family
from .bert import PRESET as BERT, TEXT_TEMPLATE, fields_from_hf, hf_fields, init
from .mapping import ACT_TO_HF, Fuse, any_value, entry, linear, norm, one_of, plain_heads, qkv_sizes

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

    values = dict(hf_fields(cfg), embedding_size=cfg.d_model)
    return ElectraConfig(**{**values, **sizes})


def from_hf_config(hf) -> ModelConfig:
    if "ElectraForMaskedLM" in (getattr(hf, "architectures", None) or []):
        raise ValueError("this is an ELECTRA generator (ElectraForMaskedLM); import the discriminator "
                         "(ElectraForPreTraining), the model ELECTRA pretrains")
    if hf.embedding_size != hf.hidden_size:
        raise ValueError(f"ELECTRA with embedding_size {hf.embedding_size} != hidden_size {hf.hidden_size} (an "
                         f"embeddings_project) is not supported for the discriminator; only equal sizes")
    return ModelConfig.preset("electra", **fields_from_hf(hf, "ELECTRA"))


register_family(Family(
    name="electra", title="ELECTRA", preset=PRESET, init=init, default_objective="electra",
    hf_class="ElectraForPreTraining", model_type="electra", table=tuple(TABLE), ignore=tuple(IGNORE), free=FREE,
    unsupported=unsupported, to_hf_config=hf_config, from_hf_config=from_hf_config, text_template=TEXT_TEMPLATE))
