"""What a model family is, and the registry of them.

A family is one file in models/families/ that ends with `register_family(Family(...))`: the preset that reproduces
the real architecture, its initialization scheme, its default objective and, when transformers has the
architecture, the class, the weight-mapping table (used in both directions) and the config conversion. Presets,
init schemes, export targets and every message that lists them are read from this registry, so a new family is one
file (or one `register_family` call at runtime). A family's transformers config classes are imported only when a
conversion runs (models/convert.py), so importing the backbone stays light.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Family:
    name: str  # the preset name (model.preset) and the init scheme's name (ModelConfig.init)
    title: str  # how people write it: "BERT", "GPT-2"
    preset: dict  # ModelConfig fields of the real architecture; sizes are overridden per run
    init: Callable  # init(model, cfg): draw fresh weights as the original does
    default_objective: str | None = None  # what `pretrain export --from-hub` continues with, named in hints
    # the transformers counterpart; hf_class None = none (export is refused)
    hf_class: str | None = None  # e.g. "BertForMaskedLM"
    model_type: str | None = None  # config.model_type of the transformers config
    table: tuple = ()  # mapping Entry rows: our state-dict keys <-> transformers keys (models/families/mapping.py)
    ignore: tuple = ()  # regexes of transformers keys skipped on import (buffers of older checkpoints)
    free: dict = field(default_factory=dict)  # field -> predicate: values the transformers config can express
    unsupported: Callable = lambda cfg: []  # sizes the transformers class cannot express (field names)
    to_hf_config: Callable | None = None  # ModelConfig -> transformers config
    from_hf_config: Callable | None = None  # transformers config -> ModelConfig
    prepare: Callable | None = None  # prepare(hf_model, cfg) before loading exported weights
    # the special tokens the family's own transformers tokenizer adds around a text, as tokenizers
    # TemplateProcessing (single, pair) over the roles {bos} {eos} {cls} {sep}: exported tokenizers encode a prompt
    # so (GPT-2 adds nothing, Llama only BOS), whatever template the run's tokenizer kind trained with
    text_template: tuple = ("$A", "$A $B:1")
    # config.json fields transformers 4.x reads where 5.x renamed them (Llama's rope_theta): legacy_config(cfg)
    legacy_config: Callable = lambda cfg: {}

    @property
    def arch(self) -> str:
        return self.preset["arch"]


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_names(arch: str | None = None) -> list[str]:
    """Registered families (of one architecture), in registration order."""
    return [name for name, f in FAMILIES.items() if arch is None or f.arch == arch]


def exportable() -> list[Family]:
    """Families with a transformers counterpart."""
    return [f for f in FAMILIES.values() if f.hf_class is not None]
