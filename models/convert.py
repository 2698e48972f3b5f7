"""Our Transformer <-> transformers' own classes, through each family's table (models/families/, models/family.py).

    from models.convert import from_transformers, to_transformers, match_family
    model = from_transformers("path/or/hub-id")          # or a transformers model object
    hf_model = to_transformers(model, "bert")            # a BertForMaskedLM with our weights
    family, differing = match_family(model.config)       # ("bert", []) or the nearest and what differs

Only families with a transformers class take part (Family.hf_class); transformers itself is imported when a
conversion runs, not when `models` is imported.
"""
from __future__ import annotations

import dataclasses
import os

from .config import SIZE_FIELDS, WEIGHT_NEUTRAL_FIELDS, ModelConfig
from .families.mapping import export_with, import_with
from .family import FAMILIES, Family, exportable
from .transformer import Transformer

# Fields not compared when matching a config to a family: sizes, weight-neutral fields, and rope_theta /
# relative_*, which the one family where they matter (llama, t5) expresses and the others leave inert.
NOT_ARCHITECTURE = SIZE_FIELDS | WEIGHT_NEUTRAL_FIELDS | {"rope_theta", "relative_buckets", "relative_max_distance"}


def hf_classes() -> dict[str, str]:
    """family -> transformers class name, for the families that have one."""
    return {f.name: f.hf_class for f in exportable()}


def _family(name: str) -> Family:
    family = FAMILIES.get(name)
    if family is None or family.hf_class is None:
        raise ValueError(f"unknown family {name!r} for transformers; choose one of {', '.join(hf_classes())}")
    return family


def to_hf_config(family: str, cfg: ModelConfig):
    return _family(family).to_hf_config(cfg)


def from_hf_config(hf_config) -> ModelConfig:
    return _family(family_of(hf_config)).from_hf_config(hf_config)


def family_of(hf_config) -> str:
    model_type = getattr(hf_config, "model_type", None)
    types = {f.model_type: f.name for f in exportable()}
    if model_type not in types:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: {', '.join(types)}")
    return types[model_type]


# ---- which family a config is ---------------------------------------------------------------------------------
def family_differences(cfg: ModelConfig, family: str) -> list[str]:
    """The architecture fields of `cfg` that the family's transformers class cannot reproduce ([] = exportable)."""
    spec, preset = _family(family), ModelConfig.preset(family)
    differing = []
    for field in dataclasses.fields(ModelConfig):
        name = field.name
        if name in NOT_ARCHITECTURE:
            continue
        value = getattr(cfg, name)
        if name in spec.free:
            ok = spec.free[name](value)
        elif name == "scale_tied_head" and not cfg.tie_embeddings:
            ok = True  # inert without a tied head
        elif name in ("global_attn_every_n_layers", "local_rope_theta") and not cfg.local_attention:
            ok = True  # inert without sliding-window layers
        else:
            ok = value == getattr(preset, name)
        if not ok:
            differing.append(name)
    return differing + [name for name in spec.unsupported(cfg) if name not in differing]


def match_family(cfg: ModelConfig) -> tuple[str, list[str]]:
    """(family, []) when cfg is exactly one of the exportable families' architectures (any size), else the nearest
    family (same arch first, then fewest differing fields) and the fields that differ from it."""
    scored = []
    for order, family in enumerate(hf_classes()):
        differing = family_differences(cfg, family)
        scored.append((FAMILIES[family].arch != cfg.arch, len(differing), order, family, differing))
    *_, family, differing = min(scored)
    return family, differing


def check_family(cfg: ModelConfig, family: str) -> None:
    differing = family_differences(cfg, family)
    if differing:
        nearest, nearest_diff = match_family(cfg)
        hint = "" if nearest == family else \
            f"; nearest family: {nearest} (differs in {', '.join(nearest_diff) or 'nothing'})"
        raise ValueError(f"this model cannot be written as {family} ({_family(family).hf_class}): fields "
                         f"{', '.join(differing)} differ from the {family} architecture{hint}")


# ---- state dicts -----------------------------------------------------------------------------------------------
def import_state_dict(family: str, hf_state_dict: dict, cfg: ModelConfig, strict: bool = True) -> dict:
    """A transformers state dict of the family's class -> our state dict for Transformer(cfg)."""
    spec = _family(family)
    return import_with(spec.table, hf_state_dict, cfg, ignore=spec.ignore, strict=strict)


def export_state_dict(family: str, our_state_dict: dict, cfg: ModelConfig) -> dict:
    """Our state dict -> the family class's state dict (every key, tied copies included: loads with strict=True)."""
    return export_with(_family(family).table, our_state_dict, cfg)


# ---- models ----------------------------------------------------------------------------------------------------
def _hf_class(family: str):
    import transformers

    return getattr(transformers, _family(family).hf_class)


def from_transformers(hf_model_or_path) -> Transformer:
    """Our Transformer (fp32, eval mode) from a transformers model object or a local folder / Hub id with
    safetensors weights (no custom code is ever run). The family comes from config.model_type."""
    if isinstance(hf_model_or_path, (str, os.PathLike)):
        from transformers import AutoConfig

        path = os.fspath(hf_model_or_path)
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        family = family_of(hf_config)
        _family(family).from_hf_config(hf_config)  # refuse what the family cannot hold before loading weights
        hf_model = _hf_class(family).from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    else:
        hf_model = hf_model_or_path
        family = family_of(hf_model.config)
    cfg = _family(family).from_hf_config(hf_model.config)
    state = import_state_dict(family, hf_model.state_dict(), cfg, strict=False)
    model = Transformer(cfg)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def to_transformers(model: Transformer, family: str):
    """A transformers PreTrainedModel of the family's class holding our weights, in eval mode. Refuses
    (ValueError naming the differing fields and the nearest family) a config the family cannot reproduce."""
    cfg = model.config
    check_family(cfg, family)
    spec = _family(family)
    hf_config = spec.to_hf_config(cfg)
    hf_config.architectures = [spec.hf_class]
    hf_model = _hf_class(family)(hf_config)
    if spec.prepare is not None:
        spec.prepare(hf_model, cfg)
    state = export_state_dict(family, model.state_dict(), cfg)
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()
