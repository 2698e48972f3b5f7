"""The config tree (model, objective, data, tokenizer, optim, run): dataclasses parsed by jsonargparse from YAML
(`--config my.yaml`) and dotted command-line overrides (`--model.d_model 512`). Unknown keys and wrong types are
refused with one line; so are bad objective options and contradictions (objective vs architecture, sequence vs
positions, ...): all before anything is written.

Precedence, lowest first: dataclass defaults < recipe defaults < the run's saved config.yaml (when resuming)
< --config files (in order) < command-line overrides.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, set_loader

from models import ModelConfig, family_names, get_family
from objectives import objective_class

from ..data.corpus import DataConfig
from ..data.tokenizer import STANDARD, TokenizerConfig, reserved_tokens
from ..errors import ConfigError, UserError
from .decay import decay_config, source_checkpoint, source_run
from .hardware import attention_kernel
from .init_from import inherit, init_source
from .run_dir import RunDir


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2 booleans: only true / false are, so `mixed_precision: no` is the string "no" (YAML 1.1, which
    PyYAML follows, would read no / yes / on / off as booleans)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def load_yaml(text: str):
    return yaml.load(text, Loader=_Yaml12Loader)


set_loader("yaml", load_yaml)


# ---- sections ------------------------------------------------------------------------------------------------
def _model_section():
    """`preset` plus every ModelConfig field as Optional (None = the preset's value), plus `init_from`."""
    hints = typing.get_type_hints(ModelConfig)
    fields = [("preset", str, field(default="bert")),
              ("init_from", Optional[str], field(default=None))]
    for f in dataclasses.fields(ModelConfig):
        hint = hints[f.name]
        fields.append((f.name, Optional[hint], field(default=None)))
    doc = (f"The network: a preset ({', '.join(family_names())}) sized by any ModelConfig field; None keeps the "
           "preset's value (vocab_size and special token ids come from the tokenizer). init_from: the weights to "
           "start from, also under another objective or shape -- a run directory (its final model, else its latest "
           "checkpoint), a checkpoint RUN/checkpoints/step_N, or a transformers folder / Hub id; a run lends its "
           "tokenizer and the model fields left unset.")
    return dataclasses.make_dataclass("ModelSection", fields, namespace={"__doc__": doc})


ModelSection = _model_section()


@dataclass
class ObjectiveSection:
    """The pretraining objective (objectives/) and its options, e.g. {mlm_probability: 0.3}. document_masking:
    attention never crosses a document boundary inside a packed block and positions restart at each document."""
    name: str = "mlm"
    options: dict[str, Any] = field(default_factory=dict)
    document_masking: bool = False


@dataclass
class OptimSection:
    """AdamW (decay on weight matrices only) with warmup then cosine / linear decay to min_lr_ratio * lr, constant,
    or wsd: warmup, the peak rate, then a decay_shape decay over the last decay_steps steps (None: the last
    decay_fraction of the budget)."""
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    decay_steps: Optional[int] = None
    decay_fraction: float = 0.2  # Hagele et al. 2024: 20% of 1-sqrt decay matches a cosine run
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"
    grad_clip: float = 1.0
    fused: Optional[bool] = None


@dataclass
class RunSection:
    """Budget, batch, precision, evaluation, checkpointing and logging of one run. attention_kernel: how document
    masks are computed; auto picks FlexAttention where it can train (compiled, on GPU, see models/flex.py) and
    SDPA with a boolean mask elsewhere."""
    output_dir: str = "runs/pretrain"
    seed: int = 0
    seq_len: int = 128
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: Optional[int] = 1000
    max_tokens: Optional[int] = None
    max_time: Optional[float] = None
    stop_at_step: Optional[int] = None
    eval_every: int = 200
    eval_batches: Optional[int] = 20
    save_every: int = 500
    keep_last: int = 2
    resume: Literal["no", "auto"] = "no"
    overwrite: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    compile: bool = False
    attention_kernel: Literal["auto", "sdpa", "flex"] = "auto"
    activation_checkpointing: bool = False
    report_to: Literal["none", "wandb", "tensorboard"] = "none"
    project: str = "unified-pretrain"
    name: Optional[str] = None
    on_nonfinite: Literal["stop", "skip"] = "stop"
    peak_flops: Optional[float] = None
    progress: bool = True
    sample: bool = True
    cache_dir: Optional[str] = None
    dist_timeout: float = 600.0
    decay_from: Optional[str] = None  # a stable-phase checkpoint to decay from, in a new run (pretrain/train/decay.py)
    deterministic: bool = False  # torch's deterministic kernels only (pretrain/train/hardware.py: apply_determinism)



@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)


# ---- parsing -------------------------------------------------------------------------------------------------
def build_parser(prog: str = "pretrain train", defaults: dict | None = None, description: str | None = None):
    parser = ArgumentParser(prog=prog, description=description or __doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file(s) with any of the sections below")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in run.output_dir (= run.resume auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in run.output_dir")
    parser.add_class_arguments(TrainConfig, as_group=False, fail_untyped=False)
    if defaults:
        parser.set_defaults(_flatten(defaults))
    return parser


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not name.endswith("options") and "." not in key:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _print_config_spelling(arg: str) -> str:
    """jsonargparse's own `--print_config[=flags]`, also spelt `--print-config` like the toolkit's other flags."""
    return "--print_config" + arg[len("--print-config"):] if arg.split("=", 1)[0] == "--print-config" else arg


def parse_config(argv: list[str] | None, defaults: dict | None = None, prog: str = "pretrain train",
                 saved_config: str | None = None, check: bool = True) -> TrainConfig:
    """Parse argv into a TrainConfig. saved_config: a run's config.yaml inserted below the user's --config/flags."""
    parser = build_parser(prog, defaults)
    argv = _wrap_list_values([_print_config_spelling(a) for a in argv or []])
    _check_config_files(argv)
    if saved_config is not None:
        argv = ["--config", saved_config] + argv
    try:
        ns = parser.parse_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(one_line_parse_error(str(e), prog)) from None
    resume, overwrite = ns.pop("resume"), ns.pop("overwrite")
    ns.pop("config", None)
    cfg = parser.instantiate(ns)
    cfg = TrainConfig(**{k: cfg[k] for k in ("model", "objective", "data", "tokenizer", "optim", "run")})
    if resume:
        cfg.run.resume = "auto"
    if overwrite:
        cfg.run.overwrite = True
    if check:
        check_static(cfg)
    return cfg


def _check_config_files(argv: list[str]):
    """Every `--config FILE` exists and holds a YAML mapping: a one-line ConfigError naming the file otherwise
    (jsonargparse would report a missing file as an invalid value and a YAML error without the file's name)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if "\n" in value or value.lstrip().startswith(("{", "[")):
            continue  # inline YAML / JSON, which jsonargparse also accepts
        path = Path(value).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise ConfigError(f"config file {value} {what}; check the path given to --config")
        try:
            data = load_yaml(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {value} cannot be read ({getattr(e, 'strerror', None) or e}); "
                              f"check the path given to --config") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"config file {value} is not valid YAML ({problem}{where}); fix the YAML "
                              f"syntax there") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"config file {value} holds a {type(data).__name__}, not a mapping of sections; "
                              f"write it as `run:` / `model:` / ... sections with keys under them")


def _list_keys(cls=None, prefix: str = "") -> set[str]:
    """Dotted keys whose type is a list of strings (e.g. data.files)."""
    keys = set()
    hints = typing.get_type_hints(cls or TrainConfig)
    for f in dataclasses.fields(cls or TrainConfig):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= _list_keys(hint, f"{prefix}{f.name}.")
        elif any(typing.get_origin(h) is list and typing.get_args(h) == (str,)
                 for h in (hint, *typing.get_args(hint))):  # list[str] or Optional[list[str]]
            keys.add(f"{prefix}{f.name}")
    return keys


def _wrap_list_values(argv: list[str]) -> list[str]:
    """`--data.files 'corpus/*.txt'` means a one-element list: wrap plain values of list keys as JSON."""
    keys, out, i = _list_keys(), [], 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key in keys and eq and not value.lstrip().startswith("["):
            out.append(f"--{key}={json.dumps([value])}")
        elif key in keys and not eq and i + 1 < len(argv) and not argv[i + 1].lstrip().startswith("["):
            out += [arg, json.dumps([argv[i + 1]])]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def one_line_parse_error(message: str, prog: str) -> str:
    lines = [ln.strip().lstrip("- ").strip() for ln in message.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else "invalid arguments"
    m = re.match(r'Parser key "([^"]+)"', first)
    if m:
        key = m.group(1)
        value = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Given value:")), None)
        if value is None:
            value = next((ln.split("Got value:", 1)[1].strip() for ln in lines if "Got value:" in ln), "?")
        expected = [ln[len("Expected a "):] for ln in lines if ln.startswith("Expected a ")]
        expected = [re.sub(r"<class '(\w+)'>", r"\1", e).split(". Got")[0] for e in expected]
        expected = [e.replace("typing.", "") for e in expected if e != "NoneType"]
        expected = [("one of " + e[len("Literal["):-1].replace("'", "")) if e.startswith("Literal[") else e
                    for e in expected]
        want = " or ".join(dict.fromkeys(expected)) or "another type"
        return f"invalid value {value!r} for {key}: expected {want}; fix it on the command line or in the YAML"
    m = re.match(r"unrecognized arguments: (.*)", first)
    if m:
        return f"unknown option(s) {m.group(1)}; run `{prog} --help` for the valid keys"
    m = re.match(r"Group '([^']+)' does not accept (?:nested key|option) '([^']+)'", first)
    if m:
        return (f"unknown key {m.group(1)}.{m.group(2)}; run `{prog} --help` for the valid keys of "
                f"the {m.group(1)} section")
    return "; ".join(lines)[:300]


# ---- static checks (no tokenizer needed) -----------------------------------------------------------------------
def check_static(cfg: TrainConfig):
    """Contradictions visible from the config alone (the tokenizer-dependent ones are checked when the run is
    built, still before anything is written)."""
    try:
        objective = objective_class(cfg.objective.name)
        objective.parse_options(cfg.objective.options)
    except UserError as e:
        raise ConfigError(str(e)) from None
    model_cfg = resolve_model_config(cfg, vocab_size=None)
    try:
        objective.check_model(model_cfg)
    except UserError as e:
        raise ConfigError(f"{e} (set model.preset or objective.name)") from None
    r = cfg.run
    if r.seq_len < 2:
        raise ConfigError(f"run.seq_len must be at least 2, got {r.seq_len}")
    if r.seq_len > model_cfg.max_seq_len:
        raise ConfigError(f"run.seq_len {r.seq_len} is longer than model.max_seq_len {model_cfg.max_seq_len}; "
                          f"lower run.seq_len or raise model.max_seq_len")
    for name in ("batch_size", "grad_accum", "eval_every", "save_every", "keep_last"):
        if getattr(r, name) < 1:
            raise ConfigError(f"run.{name} must be at least 1, got {getattr(r, name)}")
    if r.max_steps is None and r.max_tokens is None and r.max_time is None:
        raise ConfigError("no budget: set run.max_steps, run.max_tokens or run.max_time")
    for name in ("max_steps", "max_tokens", "max_time"):
        value = getattr(r, name)
        if value is not None and value <= 0:
            raise ConfigError(f"run.{name} must be positive, got {value}")
    _check_tokenizer_size(cfg, objective.special_tokens)
    attention_kernel(r.attention_kernel, cfg.objective.document_masking, model_cfg,
                     "cuda" if torch.cuda.is_available() else "cpu", r.compile)
    o = cfg.optim
    if o.lr <= 0 or o.warmup_steps < 0 or not 0 <= o.min_lr_ratio <= 1 or o.grad_clip < 0:
        raise ConfigError("optim: lr must be > 0, warmup_steps >= 0, min_lr_ratio in [0, 1], grad_clip >= 0")
    _check_decay(o, r)


def _check_decay(o: OptimSection, r: RunSection):
    """The wsd schedule's decay: a positive length that leaves room for warmup, in a budget that counts steps."""
    if not 0 < o.decay_fraction <= 1:
        raise ConfigError(f"optim.decay_fraction {o.decay_fraction} must be in (0, 1]; e.g. 0.2")
    if o.decay_steps is None:
        return
    if o.decay_steps < 1:
        raise ConfigError(f"optim.decay_steps must be at least 1, got {o.decay_steps}")
    if r.max_steps is None and r.max_tokens is None:
        raise ConfigError("optim.decay_steps counts steps, but the budget is run.max_time only; use "
                          "optim.decay_fraction with a time budget, or set run.max_steps")
    if r.max_steps is not None and r.max_tokens is None and o.decay_steps > r.max_steps - o.warmup_steps:
        raise ConfigError(f"optim.decay_steps {o.decay_steps} does not fit after optim.warmup_steps "
                          f"{o.warmup_steps} in run.max_steps {r.max_steps}; lower it or raise run.max_steps")


def _check_tokenizer_size(cfg: TrainConfig, roles):
    """A vocabulary too small for the special tokens the tokenizer kind and the objective reserve."""
    t = cfg.tokenizer
    if t.path or t.kind not in STANDARD:
        return
    special = reserved_tokens(t.kind, roles)
    least = len(special) + (256 if t.kind == "bpe" else 1)
    if t.vocab_size < least:
        raise ConfigError(f"tokenizer.vocab_size {t.vocab_size} is smaller than the {len(special)} special tokens "
                          f"a {t.kind} tokenizer reserves plus {least - len(special)} ordinary one(s); raise it to "
                          f"at least {least}")
    if cfg.model.vocab_size is not None and cfg.model.vocab_size < least:
        raise ConfigError(f"model.vocab_size {cfg.model.vocab_size} is smaller than the tokenizer's {least} reserved "
                          f"tokens; remove model.vocab_size (it follows the tokenizer)")


def resolve_model_config(cfg: TrainConfig, vocab_size: int | None, token_ids: dict | None = None) -> ModelConfig:
    """ModelConfig.preset(preset, **non-None overrides); vocab and special ids from the tokenizer (token_ids:
    role -> id, see pretrain.train.build.token_ids) unless set."""
    section = cfg.model
    if section.preset not in family_names():
        raise ConfigError(f"unknown model.preset {section.preset!r}; choose one of {', '.join(family_names())}")
    overrides = {f.name: getattr(section, f.name) for f in dataclasses.fields(ModelConfig)
                 if getattr(section, f.name) is not None}
    derived = {"vocab_size": vocab_size or overrides.get("vocab_size") or 32000}
    if token_ids:
        derived.update(_token_ids_for(get_family(section.preset).preset, token_ids))
    try:
        return ModelConfig.preset(section.preset, **{**derived, **overrides})
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None


def _token_ids_for(preset: dict, ids: dict) -> dict:
    """Map the preset's special-token roles onto this tokenizer's ids (e.g. BART starts decoding with </s>, T5
    with <pad>): the role the preset's decoder_start id plays in the original vocabulary is kept."""
    out = {"pad_token_id": ids.get("pad"), "bos_token_id": ids.get("bos"), "eos_token_id": ids.get("eos")}
    start = preset.get("decoder_start_token_id")
    if start is not None:
        role = next((r for r in ("eos", "pad", "bos") if preset.get(f"{r}_token_id") == start), "eos")
        out["decoder_start_token_id"] = ids.get(role) if ids.get(role) is not None else ids.get("eos")
    return {k: v for k, v in out.items() if v is not None}


# ---- saving ----------------------------------------------------------------------------------------------------
def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: TrainConfig) -> str:
    data = _yaml_safe(to_dict(cfg))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _yaml_safe(value):
    if isinstance(value, dict):
        return {k: _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    return value


# fields that steer the process, not what is trained: excluded from the config hash
_CONTROL = {"run": {"resume", "overwrite", "stop_at_step", "progress", "sample", "report_to", "dist_timeout",
                    "max_steps", "max_tokens", "max_time", "eval_every", "save_every", "keep_last", "cache_dir",
                    "eval_batches", "output_dir", "name", "project", "peak_flops", "attention_kernel"}}


def config_hash(cfg: TrainConfig) -> str:
    data = to_dict(cfg)
    for section, keys in _CONTROL.items():
        for key in keys:
            data[section].pop(key, None)
    blob = json.dumps(_yaml_safe(data), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def saved_form(cfg: TrainConfig) -> TrainConfig:
    """The config as saved in the run directory: without this invocation's one-off controls (--resume,
    --overwrite, stop_at_step), so a resumed run does not inherit them."""
    saved = copy.deepcopy(cfg)
    saved.run.resume, saved.run.overwrite, saved.run.stop_at_step = "no", False, None
    return saved


def load_config(argv, defaults, prog) -> TrainConfig:
    """Parse the command line; with --resume, the run's own config.yaml goes under anything given now; with
    run.decay_from, the source run's (and the decay settings follow: pretrain/train/decay.py); with model.init_from
    a run of this toolkit, its tokenizer and the model fields left unset (pretrain/train/init_from.py)."""
    cfg = parse_config(argv, defaults, prog, check=False)
    saved = RunDir(cfg.run.output_dir).config
    if cfg.run.resume == "auto" and saved.is_file():
        cfg = parse_config(argv, defaults, prog, saved_config=str(saved))
        cfg.run.resume = "auto"
        cfg.run.overwrite = False
        return cfg
    if cfg.run.decay_from:
        checkpoint, step = source_checkpoint(cfg.run.decay_from)
        source = str(source_run(checkpoint).config)
        cfg = decay_config(parse_config(argv, defaults, prog, saved_config=source, check=False), checkpoint, step)
        check_static(cfg)
        return cfg
    if cfg.model.init_from:  # a run of ours lends its tokenizer and the model fields left unset
        inherit(cfg, init_source(cfg.model.init_from))
    check_static(cfg)
    return cfg
