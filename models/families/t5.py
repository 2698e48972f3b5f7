"""T5 v1.1: RMSNorm (T5LayerNorm) pre-norm encoder-decoder, relative position buckets (first block of each stack
only), no biases, unscaled attention, gated-GELU feed-forward (ReLU in v1.0), untied head; the decoder starts with
<pad>. <-> transformers T5ForConditionalGeneration.

T5 does not scale attention scores by 1/sqrt(d_kv); we always do, so query weights are multiplied by sqrt(d_kv) on
import and divided on export (a per-entry Scale). A tied head scales the decoder output by d_model**-0.5
(our scale_tied_head); transformers records that as `scale_decoder_outputs` (and keeps `tie_word_embeddings` True
for every T5): ours tie_embeddings=True <-> scale_decoder_outputs=True, untied (v1.1) <-> False with its own
lm_head."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..attention import Attention
from ..config import ModelConfig
from ..family import Family, register_family
from ..layers import FeedForward, RelativeBias
from .mapping import (Fuse, Scale, any_value, entry, gate_up_sizes, kv_sizes, linear, norm, one_of, qkv_sizes,
                      sqrt_head_dim, token_embeddings)

PRESET = dict(arch="encoder-decoder", vocab_size=32128, d_model=512, n_layers=8, n_heads=6, head_dim=64,
              d_ff=1024, position="relative", norm="rmsnorm", norm_eps=1e-6, norm_placement="pre",
              activation="geglu", bias=False, tie_embeddings=False, scale_tied_head=True, init="t5",
              pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def init(model, cfg) -> None:
    """Mesh-TF scheme: std depends on fan-in. Our queries hold T5's query weights times sqrt(head_dim) (the
    mapping folds T5's unscaled attention into them), so their std is d_model**-0.5 rather than
    (d_model * d_kv)**-0.5."""
    d, inner = cfg.d_model, cfg.n_heads * cfg.dim_head
    nn.init.normal_(model.tok_emb.weight, 0.0, 1.0)
    if model.head is not None:
        nn.init.normal_(model.head.weight, 0.0, 1.0)
    for module in model.modules():
        if isinstance(module, Attention):
            linear_in = [module.q, module.kv] if module.cross else [module.qkv]
            for lin in linear_in:
                nn.init.normal_(lin.weight, 0.0, d ** -0.5)
            nn.init.normal_(module.out.weight, 0.0, inner ** -0.5)
        elif isinstance(module, FeedForward):
            nn.init.normal_(module.up.weight, 0.0, d ** -0.5)
            nn.init.normal_(module.down.weight, 0.0, cfg.d_ff ** -0.5)
        elif isinstance(module, RelativeBias):
            nn.init.normal_(module.bias.weight, 0.0, d ** -0.5)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)


EMBEDDINGS = ["shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
Q_SCALE = Scale(sqrt_head_dim)


def _gated(cfg):
    return cfg.gated


def _plain(cfg):
    return not cfg.gated


def _stack(side: str) -> list:
    L, s = f"{side}.block.{{i}}.layer", f"{side}.layers.{{i}}"
    ff = 2 if side == "decoder" else 1
    rows = [
        entry(f"{side}.rel_bias.bias.weight", f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        *norm(f"{s}.self_norm", f"{L}.0.layer_norm"),
        *linear(f"{s}.self_attn.qkv", [f"{L}.0.SelfAttention.{p}" for p in "qkv"],
                Fuse(qkv_sizes, parts=[Q_SCALE, None, None])),
        *linear(f"{s}.self_attn.out", f"{L}.0.SelfAttention.o"),
        *norm(f"{s}.ff_norm", f"{L}.{ff}.layer_norm"),
        *linear(f"{s}.ff.up", [f"{L}.{ff}.DenseReluDense.wi_0", f"{L}.{ff}.DenseReluDense.wi_1"],
                Fuse(gate_up_sizes), when=_gated),
        *linear(f"{s}.ff.up", f"{L}.{ff}.DenseReluDense.wi", when=_plain),
        *linear(f"{s}.ff.down", f"{L}.{ff}.DenseReluDense.wo"),
        *norm(f"{side}.final_norm", f"{side}.final_layer_norm"),
    ]
    if side == "decoder":
        rows += [
            *norm(f"{s}.cross_norm", f"{L}.1.layer_norm"),
            *linear(f"{s}.cross_attn.q", f"{L}.1.EncDecAttention.q", Q_SCALE),
            *linear(f"{s}.cross_attn.kv", [f"{L}.1.EncDecAttention.k", f"{L}.1.EncDecAttention.v"], Fuse(kv_sizes)),
            *linear(f"{s}.cross_attn.out", f"{L}.1.EncDecAttention.o"),
        ]
    return rows


TABLE = [
    *token_embeddings(EMBEDDINGS, "lm_head.weight"),
    *_stack("encoder"),
    *_stack("decoder"),
]
IGNORE = [r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$"]
TEXT_TEMPLATE = ("$A {eos}", "$A {eos} $B:1 {eos}:1")  # T5Tokenizer: EOS after each text, as span corruption's inputs

FF_TO_HF = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu", "geglu": "gated-gelu",
            "swiglu": "gated-silu"}
FF_FROM_HF = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
              "silu": "silu", "gated-gelu": "geglu", "gated-gelu_new": "geglu", "gated-gelu_pytorch_tanh": "geglu",
              "gated-silu": "swiglu"}
FREE = {"norm_eps": any_value, "activation": one_of(*FF_TO_HF), "tie_embeddings": any_value}


def unsupported(cfg: ModelConfig) -> list[str]:
    return ["n_kv_heads"] if cfg.kv_heads != cfg.n_heads else []


def to_hf_config(cfg: ModelConfig):
    from transformers import T5Config

    return T5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.dim_head, d_ff=cfg.d_ff, num_layers=cfg.n_layers,
        num_decoder_layers=cfg.decoder_layers, num_heads=cfg.n_heads,
        relative_attention_num_buckets=cfg.relative_buckets,
        relative_attention_max_distance=cfg.relative_max_distance, dropout_rate=cfg.dropout,
        layer_norm_epsilon=cfg.norm_eps, feed_forward_proj=FF_TO_HF[cfg.activation],
        pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id, bos_token_id=cfg.bos_token_id,
        decoder_start_token_id=cfg.decoder_start_token_id, tie_word_embeddings=cfg.tie_embeddings,
        n_positions=cfg.max_seq_len)


def from_hf_config(hf) -> ModelConfig:
    if hf.feed_forward_proj not in FF_FROM_HF:
        raise ValueError(f"T5 feed_forward_proj {hf.feed_forward_proj!r} is not supported; "
                         f"use one of {', '.join(FF_FROM_HF)}")
    tied = bool(getattr(hf, "scale_decoder_outputs", getattr(hf, "tie_word_embeddings", True)))
    start = getattr(hf, "decoder_start_token_id", None)
    return ModelConfig.preset(
        "t5", vocab_size=hf.vocab_size, d_model=hf.d_model, head_dim=hf.d_kv, d_ff=hf.d_ff, n_layers=hf.num_layers,
        n_decoder_layers=None if hf.num_decoder_layers in (None, hf.num_layers) else hf.num_decoder_layers,
        n_heads=hf.num_heads, relative_buckets=hf.relative_attention_num_buckets,
        relative_max_distance=hf.relative_attention_max_distance, dropout=float(hf.dropout_rate),
        # T5 drops after the activation in plain feed-forwards too (v1.0); gated ones follow `dropout` already
        activation_dropout=None if hf.is_gated_act else float(hf.dropout_rate) or None,
        norm_eps=hf.layer_norm_epsilon, activation=FF_FROM_HF[hf.feed_forward_proj],
        max_seq_len=getattr(hf, "n_positions", None) or 512,
        pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0, eos_token_id=hf.eos_token_id,
        bos_token_id=getattr(hf, "bos_token_id", None),
        decoder_start_token_id=start if start is not None else hf.pad_token_id, tie_embeddings=tied)


def prepare(hf_model, cfg: ModelConfig) -> None:
    """transformers >= 5 builds every T5 with lm_head tied to the shared embedding; an untied (v1.1) head gets its
    own parameter (save_pretrained then writes it, and from_pretrained keeps it apart)."""
    if not cfg.tie_embeddings and hf_model.lm_head.weight is hf_model.shared.weight:
        hf_model.lm_head.weight = torch.nn.Parameter(hf_model.shared.weight.detach().clone())
        getattr(hf_model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)


register_family(Family(
    name="t5", title="T5", preset=PRESET, init=init, default_objective="span", hf_class="T5ForConditionalGeneration",
    model_type="t5", table=tuple(TABLE), ignore=tuple(IGNORE), free=FREE, unsupported=unsupported,
    to_hf_config=to_hf_config, from_hf_config=from_hf_config, prepare=prepare, text_template=TEXT_TEMPLATE))
