"""The machinery behind the per-family key tables: entries, per-entry layout transforms, and the two directions.

A table is a list of `Entry(ours, hf, transform, when)`: one of our state-dict keys, the Hugging Face key(s) it
corresponds to, and a `Transform` that turns the HF tensor(s) into ours (`to_ours`) and back (`to_hf`). `{i}` in
both keys stands for the layer index; the layer count is that of the stack named by our key (`encoder.` /
`decoder.`). `when(cfg)` restricts an entry to some configs (biases, tied or untied heads, gated feed-forward).
Several HF keys on one entry are either fused into our tensor (`Fuse`: q/k/v, gate/up) or are copies of it
(`Copies`: HF keys tied to the same weight, e.g. `lm_head.weight` and the word embeddings): on import the first
one is read, on export every one is written, so the exported dict loads into the HF model with `strict=True`.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

log = logging.getLogger(__name__)

class Transform:
    """Identity: one HF tensor <-> one of ours."""

    def to_ours(self, tensors: Sequence[torch.Tensor], cfg) -> torch.Tensor:
        (tensor,) = tensors
        return tensor

    def to_hf(self, tensor: torch.Tensor, cfg) -> list[torch.Tensor]:
        return [tensor]


IDENTITY = Transform()


class Transpose(Transform):
    """GPT-2's Conv1D stores weights as [in, out], the transpose of nn.Linear (biases are left as they are)."""

    def to_ours(self, tensors, cfg):
        (tensor,) = tensors
        return tensor.t().contiguous() if tensor.ndim == 2 else tensor

    def to_hf(self, tensor, cfg):
        return [tensor.t().contiguous() if tensor.ndim == 2 else tensor]


class Reshape(Transform):
    """Same values, another shape: BART's final_logits_bias is [1, vocab], our head_bias is [vocab]."""

    def __init__(self, hf_shape: Callable):
        self.hf_shape = hf_shape

    def to_ours(self, tensors, cfg):
        (tensor,) = tensors
        return tensor.reshape(-1)

    def to_hf(self, tensor, cfg):
        return [tensor.reshape(self.hf_shape(cfg))]


class Scale(Transform):
    """Ours = HF x factor(cfg). T5 does not scale attention scores by 1/sqrt(d_kv); we always do, so its query
    weights are stored multiplied by sqrt(d_kv). Computed in float64 so that a power-of-4 d_kv round-trips exactly
    (and any other to within one ulp)."""

    def __init__(self, factor: Callable):
        self.factor = factor

    def to_ours(self, tensors, cfg):
        (tensor,) = tensors
        return (tensor.double() * self.factor(cfg)).to(tensor.dtype)

    def to_hf(self, tensor, cfg):
        return [(tensor.double() / self.factor(cfg)).to(tensor.dtype)]


class Fuse(Transform):
    """Several HF tensors concatenated on dim 0 into one of ours (q/k/v, k/v, gate/up), each part optionally
    transformed on its own (T5's query scale)."""

    def __init__(self, sizes: Callable, parts: Sequence[Transform | None] | None = None):
        self.sizes, self.parts = sizes, parts

    def _part(self, j):
        return (self.parts[j] if self.parts and self.parts[j] is not None else IDENTITY)

    def to_ours(self, tensors, cfg):
        return torch.cat([self._part(j).to_ours([t], cfg) for j, t in enumerate(tensors)], dim=0)

    def to_hf(self, tensor, cfg):
        chunks = tensor.split(self.sizes(cfg), dim=0)
        return [self._part(j).to_hf(c.contiguous(), cfg)[0] for j, c in enumerate(chunks)]


class Copies(Transform):
    """HF keys that all hold the same tensor (tied weights): read the first present, write all."""

    def __init__(self, n: int):
        self.n = n

    def to_ours(self, tensors, cfg):
        return tensors[0]

    def to_hf(self, tensor, cfg):
        return [tensor] * self.n


@dataclass(frozen=True)
class Entry:
    ours: str
    hf: tuple[str, ...]
    transform: Transform = IDENTITY
    when: Callable | None = None
    first_layer: int = 0  # `{i}` runs from here (ModernBERT's layer 0 has no attention norm)


def entry(ours: str, hf: str | Sequence[str], transform: Transform | None = None, when=None,
          first_layer: int = 0) -> Entry:
    hf = (hf,) if isinstance(hf, str) else tuple(hf)
    if transform is None:
        transform = Copies(len(hf)) if len(hf) > 1 else IDENTITY
    return Entry(ours, hf, transform, when, first_layer)


def has_bias(cfg) -> bool:
    return cfg.bias


def layernorm_bias(cfg) -> bool:
    return cfg.norm == "layernorm" and cfg.bias


def linear(ours: str, hf: str | Sequence[str], transform: Transform | None = None, when=None) -> list[Entry]:
    """weight and (when cfg.bias) bias of one Linear; `hf` are module names (without .weight)."""
    names = (hf,) if isinstance(hf, str) else tuple(hf)
    both = (lambda c: when(c) and has_bias(c)) if when else has_bias
    return [entry(f"{ours}.weight", [f"{n}.weight" for n in names], transform, when),
            entry(f"{ours}.bias", [f"{n}.bias" for n in names], transform, both)]


def token_embeddings(embeddings: str | Sequence[str], head: str) -> list[Entry]:
    """Our token embedding (and untied head) <-> the family's embedding key(s) and its LM head: a tied head is one
    more copy of the embedding."""
    embeddings = [embeddings] if isinstance(embeddings, str) else list(embeddings)
    return [entry("tok_emb.weight", [*embeddings, head], when=lambda c: c.tie_embeddings),
            entry("tok_emb.weight", embeddings, when=lambda c: not c.tie_embeddings),
            entry("head.weight", head, when=lambda c: not c.tie_embeddings)]


def norm(ours: str, hf: str, when=None, first_layer: int = 0) -> list[Entry]:
    """weight and (LayerNorm with biases) bias of one norm."""
    both = (lambda c: when(c) and layernorm_bias(c)) if when else layernorm_bias
    return [entry(f"{ours}.weight", f"{hf}.weight", when=when, first_layer=first_layer),
            entry(f"{ours}.bias", f"{hf}.bias", when=both, first_layer=first_layer)]


# ---- activations: ours <-> transformers' ACT2FN names (non-gated) --------------------------------------------
ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
ACT_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
               "silu": "silu", "swish": "silu"}


def activation_from_hf(name: str, family: str) -> str:
    if name not in ACT_FROM_HF:
        raise ValueError(f"{family} activation {name!r} is not supported; use one of {', '.join(ACT_FROM_HF)}")
    return ACT_FROM_HF[name]


def dropouts(hidden: float, attention: float) -> dict:
    """Our dropout / attention_dropout (None = same as dropout) from a family's two rates."""
    return dict(dropout=float(hidden), attention_dropout=None if attention == hidden else float(attention))


def attention_dropout(cfg) -> float:
    return cfg.attention_dropout_rate


def any_value(value) -> bool:
    return True


def one_of(*values) -> Callable:
    return lambda value: value in values


def plain_heads(cfg) -> list[str]:
    """Sizes that classic multi-head families cannot express: grouped-query heads, a head_dim off d_model/heads."""
    bad = []
    if cfg.kv_heads != cfg.n_heads:
        bad.append("n_kv_heads")
    if cfg.dim_head * cfg.n_heads != cfg.d_model:
        bad.append("head_dim")
    return bad


# ---- sizes of fused parts -------------------------------------------------------------------------------------
def qkv_sizes(cfg) -> list[int]:
    return [cfg.n_heads * cfg.dim_head, cfg.kv_heads * cfg.dim_head, cfg.kv_heads * cfg.dim_head]


def kv_sizes(cfg) -> list[int]:
    return [cfg.kv_heads * cfg.dim_head] * 2


def gate_up_sizes(cfg) -> list[int]:
    return [cfg.d_ff, cfg.d_ff]


def sqrt_head_dim(cfg) -> float:
    return math.sqrt(cfg.dim_head)


# ---- the two directions ---------------------------------------------------------------------------------------
def _layers(cfg, ours_key: str) -> int:
    if ours_key.startswith("decoder.") and cfg.arch == "encoder-decoder":
        return cfg.decoder_layers
    return cfg.n_layers


def expand(table: Sequence[Entry], cfg) -> list[tuple[str, tuple[str, ...], Transform]]:
    """Concrete (our key, HF keys, transform) triples for this config."""
    out = []
    for e in table:
        if e.when is not None and not e.when(cfg):
            continue
        if "{i}" in e.ours:
            for i in range(e.first_layer, _layers(cfg, e.ours)):
                out.append((e.ours.format(i=i), tuple(k.format(i=i) for k in e.hf), e.transform))
        else:
            out.append((e.ours, e.hf, e.transform))
    return out


def import_with(table, hf_state: dict, cfg, ignore: Sequence[str] = (), strict: bool = True) -> dict:
    """HF state dict -> ours. Missing HF keys always raise; unexpected ones raise when strict (keys matching an
    `ignore` regex, e.g. non-persistent buffers of old checkpoints, are skipped silently)."""
    ours, used, missing = {}, set(), []
    for key, hf_keys, transform in expand(table, cfg):
        absent = [k for k in hf_keys if k not in hf_state]
        # tied copies may be absent from a checkpoint (save_pretrained drops them): the first present one is enough
        if isinstance(transform, Copies):
            present = [k for k in hf_keys if k in hf_state]
            if not present:
                missing.append(hf_keys[0])
                continue
            ours[key] = hf_state[present[0]]
            used.update(hf_keys)
            continue
        if absent:
            missing.extend(absent)
            continue
        ours[key] = transform.to_ours([hf_state[k] for k in hf_keys], cfg)
        used.update(hf_keys)
    if missing:
        raise ValueError(f"the Hugging Face state dict lacks {len(missing)} weight(s) this config needs, e.g. "
                         f"{', '.join(missing[:5])}; does the checkpoint match the config (layers, tying, biases)?")
    unexpected = [k for k in hf_state if k not in used and not any(re.search(p, k) for p in ignore)]
    if unexpected and strict:
        raise ValueError(f"the Hugging Face state dict has {len(unexpected)} weight(s) the mapping does not use, "
                         f"e.g. {', '.join(unexpected[:5])}; is it another model class or a variant we do not "
                         f"support?")
    if unexpected:
        log.warning("ignoring %d Hugging Face weight(s) the mapping does not use, e.g. %s", len(unexpected),
                    ", ".join(unexpected[:5]))
    return ours


def export_with(table, our_state: dict, cfg) -> dict:
    """Our state dict -> HF (every HF key of the model class, tied copies included)."""
    hf, used = {}, set()
    for key, hf_keys, transform in expand(table, cfg):
        if key not in our_state:
            raise ValueError(f"our state dict lacks {key!r}, which the mapping needs; does it match the config?")
        for k, t in zip(hf_keys, transform.to_hf(our_state[key], cfg), strict=True):
            hf[k] = t
        used.add(key)
    left = [k for k in our_state if k not in used]
    if left:
        raise ValueError(f"no Hugging Face key for {', '.join(left[:5])}; this config has weights the family's "
                         f"format cannot hold (check match_family)")
    return hf
