"""Weight and config mapping between our Transformer and Hugging Face `transformers` (import and export).

One small module per family (bert, gpt2, llama, bart, t5) holds ONE key table (see mapping.py) used in both
directions, the config translation both ways (`to_hf_config`, `from_hf_config`), the fields that family's HF
config can express beyond the preset (`FREE`) and the sizes it cannot (`unsupported`).

    from models.hf import from_transformers, to_transformers, match_family
    model = from_transformers("path/or/hub-id")          # or a transformers model object
    hf_model = to_transformers(model, "bert")            # a BertForMaskedLM with our weights
    family, differing = match_family(model.config)       # ("bert", []) or the nearest and what differs
"""
from __future__ import annotations

import dataclasses
import os

from ..config import ModelConfig
from ..transformer import Transformer
from . import bart, bert, gpt2, llama, t5
from .mapping import export_with, import_with

MODULES = {"bert": bert, "gpt2": gpt2, "llama": llama, "bart": bart, "t5": t5}
FAMILIES = {name: module.HF_CLASS for name, module in MODULES.items()}  # preset -> transformers class name
MODEL_TYPES = {module.MODEL_TYPE: name for name, module in MODULES.items()}  # config.model_type -> preset

# Fields that size a model (or only matter for training) rather than define its architecture: not compared.
# rope_theta and relative_* are expressible in the one family where they matter (llama, t5) and inert elsewhere.
SIZING_FIELDS = frozenset({
    "d_model", "n_layers", "n_decoder_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "vocab_size",
    "max_seq_len", "dropout", "attention_dropout", "activation_dropout", "pad_token_id", "bos_token_id", "eos_token_id",
    "decoder_start_token_id", "init_std", "init", "rope_theta", "relative_buckets", "relative_max_distance"})


def _module(family: str):
    if family not in MODULES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(MODULES)}")
    return MODULES[family]


def to_hf_config(family: str, cfg: ModelConfig):
    return _module(family).to_hf_config(cfg)


def from_hf_config(hf_config) -> ModelConfig:
    return _module(family_of(hf_config)).from_hf_config(hf_config)


def family_of(hf_config) -> str:
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: {', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


# ---- which family a config is ---------------------------------------------------------------------------------
def family_differences(cfg: ModelConfig, family: str) -> list[str]:
    """The architecture fields of `cfg` that the family's HF class cannot reproduce ([] = exportable)."""
    module, preset = _module(family), ModelConfig.preset(family)
    differing = []
    for field in dataclasses.fields(ModelConfig):
        name = field.name
        if name in SIZING_FIELDS:
            continue
        value = getattr(cfg, name)
        if name in module.FREE:
            ok = module.FREE[name](value)
        elif name == "scale_tied_head" and not cfg.tie_embeddings:
            ok = True  # inert without a tied head
        else:
            ok = value == getattr(preset, name)
        if not ok:
            differing.append(name)
    return differing + [name for name in module.unsupported(cfg) if name not in differing]


def match_family(cfg: ModelConfig) -> tuple[str, list[str]]:
    """(family, []) when cfg is exactly one of the presets' architectures (any size), else the nearest family
    (same arch first, then fewest differing fields) and the fields that differ from it."""
    scored = []
    for order, family in enumerate(MODULES):
        differing = family_differences(cfg, family)
        scored.append((ModelConfig.preset(family).arch != cfg.arch, len(differing), order, family, differing))
    *_, family, differing = min(scored)
    return family, differing


def check_family(cfg: ModelConfig, family: str) -> None:
    differing = family_differences(cfg, family)
    if differing:
        nearest, nearest_diff = match_family(cfg)
        hint = "" if nearest == family else \
            f"; nearest family: {nearest} (differs in {', '.join(nearest_diff) or 'nothing'})"
        raise ValueError(f"this model cannot be written as {family} ({FAMILIES[family]}): fields "
                         f"{', '.join(differing)} differ from the {family} architecture{hint}")


# ---- state dicts -----------------------------------------------------------------------------------------------
def import_state_dict(family: str, hf_state_dict: dict, cfg: ModelConfig, strict: bool = True) -> dict:
    """A transformers state dict of the family's class -> our state dict for Transformer(cfg)."""
    module = _module(family)
    return import_with(module.TABLE, hf_state_dict, cfg, ignore=module.IGNORE, strict=strict)


def export_state_dict(family: str, our_state_dict: dict, cfg: ModelConfig) -> dict:
    """Our state dict -> the family class's state dict (every key, tied copies included: loads with strict=True)."""
    return export_with(_module(family).TABLE, our_state_dict, cfg)


# ---- models ----------------------------------------------------------------------------------------------------
def _hf_class(family: str):
    import transformers

    return getattr(transformers, FAMILIES[family])


def from_transformers(hf_model_or_path) -> Transformer:
    """Our Transformer (fp32, eval mode) from a transformers model object or a local folder / Hub id with
    safetensors weights (no custom code is ever run). The family comes from config.model_type."""
    if isinstance(hf_model_or_path, (str, os.PathLike)):
        from transformers import AutoConfig

        path = os.fspath(hf_model_or_path)
        family = family_of(AutoConfig.from_pretrained(path, trust_remote_code=False))
        hf_model = _hf_class(family).from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    else:
        hf_model = hf_model_or_path
        family = family_of(hf_model.config)
    cfg = _module(family).from_hf_config(hf_model.config)
    state = import_state_dict(family, hf_model.state_dict(), cfg, strict=False)
    model = Transformer(cfg)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def to_transformers(model: Transformer, family: str):
    """A transformers PreTrainedModel of the family's class (FAMILIES) holding our weights, in eval mode. Refuses
    (ValueError naming the differing fields and the nearest family) a config the family cannot reproduce."""
    cfg = model.config
    check_family(cfg, family)
    module = _module(family)
    hf_config = module.to_hf_config(cfg)
    hf_config.architectures = [FAMILIES[family]]
    hf_model = _hf_class(family)(hf_config)
    if hasattr(module, "prepare"):
        module.prepare(hf_model, cfg)
    state = export_state_dict(family, model.state_dict(), cfg)
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


__all__ = ["FAMILIES", "import_state_dict", "export_state_dict", "from_transformers", "to_transformers",
           "match_family", "family_differences", "to_hf_config", "from_hf_config", "family_of"]
