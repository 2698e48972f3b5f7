"""model.init_from: a new run starting from trained weights, also under another objective or shape (continued
pretraining: CLM then MLM, an encoder-decoder's encoder, ...). Unlike --resume the step counter, optimizer, schedule
and data order start fresh.

    source = init_source("runs/gpt")       # a run (final/, else its latest checkpoint), RUN/checkpoints/step_N,
                                           # a weights folder of ours (final/, init/) or a transformers folder / id
    inherit(cfg, source)                   # the model fields and tokenizer a run's source gives by default
    check_vocabulary(source, tokenizer)    # the embedding rows must mean the same tokens
    plan = source.plan(model)              # which tensor goes where (models/transfer.py); refuses the rest

A source of this toolkit lends the new run its tokenizer and every model field the user leaves unset, except the
shape (the preset's arch), the weight-neutral fields and, when the shape changes, the head fields (the new
objective's head comes from the preset and starts fresh). A transformers source lends nothing: the config must
describe its architecture, as before.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models import ModelConfig, Transformer, get_family
from models.config import WEIGHT_NEUTRAL_FIELDS
from models.convert import from_transformers
from models.transfer import plan_transfer, summary

from ..data.tokenizer import load_tokenizer
from ..errors import ConfigError, UserError
from .checkpoint import STATE_FILE, STEP_DIR
from .decay import source_run
from .run_dir import MODEL_CONFIG, WEIGHTS, RunDir, has_weights, load_state_dict

HEAD_FIELDS = ("head_transform", "head_bias", "type_vocab_size", "tie_embeddings", "scale_tied_head")


@dataclass
class InitSource:
    name: str  # model.init_from as given
    what: str  # where the weights are, for the log
    weights: Path | None  # our weights folder (None: a transformers checkpoint)
    run: RunDir | None  # the run the weights belong to
    _cfg: ModelConfig | None = None
    _state: dict | None = field(default=None, repr=False)

    @property
    def model_cfg(self) -> ModelConfig:
        if self._cfg is None:
            self._load()
        return self._cfg

    @property
    def state(self) -> dict:
        if self._state is None:
            self._load()
        return self._state

    @property
    def tokenizer_dir(self) -> Path | None:
        return self.run.tokenizer_dir(self.weights) if self.run is not None else None

    def _load(self):
        if self.weights is not None:
            self._state = load_state_dict(self.weights / WEIGHTS)
            return
        try:
            model = from_transformers(self.name)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load model.init_from {self.name} ({str(e).splitlines()[0][:200]}); pass a run "
                            f"directory, a checkpoint (RUN/checkpoints/step_N), a transformers folder or a Hub "
                            f"id") from None
        self._cfg, self._state = model.config, model.state_dict()

    def plan(self, model):
        """models.transfer.Transfer for `model`; UserError (one line, naming the source) for what does not fit."""
        shapes = {k: tuple(v.shape) for k, v in self.state.items()}
        try:
            return plan_transfer(self.model_cfg, shapes, model)
        except UserError as e:
            raise UserError(f"model.init_from {self.name}: {e}") from None


def init_source(path: str) -> InitSource:
    """What model.init_from names; a one-line UserError for a path that is none of the accepted kinds."""
    folder = Path(path).expanduser()
    run = RunDir(folder)
    if folder.is_dir() and (run.config.is_file() or run.finished()):
        if run.finished():
            return _ours(path, run.final, run, f"the final model of run {run}")
        latest = run.latest_checkpoint()
        if latest is not None:
            return _ours(path, latest, run, f"run {run} has no final model: its latest checkpoint {latest.name}")
        if (run.init / WEIGHTS).is_file():
            return _ours(path, run.init, run, f"the imported weights of run {run} (init/)")
        raise UserError(f"model.init_from {path}: the run has neither a final model nor a complete checkpoint; "
                        f"train it first or pass another run")
    if folder.is_dir() and STEP_DIR.match(folder.name):
        if not (folder / STATE_FILE).is_file() or not has_weights(folder):
            raise UserError(f"model.init_from {path} is an incomplete checkpoint (its save was interrupted); pass "
                            f"another step_N or the run directory")
        return _ours(path, folder, source_run(folder), f"checkpoint {folder.name} of run {source_run(folder)}")
    if folder.is_dir() and (folder / WEIGHTS).is_file() and (folder / MODEL_CONFIG).is_file():
        return _ours(path, folder, RunDir(folder.parent), f"the weights in {folder}")
    if folder.is_dir() and (folder / "config.json").is_file() or not folder.exists() and _hub_id(path):
        return InitSource(path, f"transformers checkpoint {path}", None, None)
    where = "does not exist" if not folder.exists() else "holds no weights we know"
    raise UserError(f"model.init_from {path} {where}: pass a run directory, a checkpoint (RUN/checkpoints/step_N), a "
                    f"folder with {WEIGHTS} + {MODEL_CONFIG}, or a transformers folder (config.json) / Hub id")


def _hub_id(name: str) -> bool:
    return not name.startswith(("/", ".", "~")) and name.count("/") <= 1


def _ours(name: str, weights: Path, run: RunDir, what: str) -> InitSource:
    model_cfg = run.read_model_config(weights)
    if model_cfg is None:
        raise UserError(f"model.init_from {name}: no {MODEL_CONFIG} beside {weights} or in its run; restore it")
    return InitSource(name, what, weights, run, model_cfg)


# ---- what the source lends the new run's config ------------------------------------------------------------------
def inherit(cfg, source: InitSource):
    """Fill the model fields the user left unset (None) with the source's and, without tokenizer.path, use the
    source's tokenizer. A transformers source lends nothing."""
    if source.weights is None:
        return
    if source.run is not None and Path(cfg.run.output_dir).resolve() in (source.run.path.resolve(),
                                                                          source.weights.resolve()):
        raise ConfigError(f"model.init_from {source.name} is inside run.output_dir; give the new run its own "
                          f"--run.output_dir")
    try:
        arch = cfg.model.arch or get_family(cfg.model.preset).arch
    except ValueError:
        return  # an unknown preset: the static checks say so
    origin = source.model_cfg
    same_shape = arch == origin.arch
    for f in dataclasses.fields(ModelConfig):
        skip = f.name in WEIGHT_NEUTRAL_FIELDS or f.name == "arch" or \
            (not same_shape and (f.name in HEAD_FIELDS or f.name == "n_decoder_layers"))
        if not skip and getattr(cfg.model, f.name) is None:
            setattr(cfg.model, f.name, getattr(origin, f.name))
    if cfg.tokenizer.path is None and source.tokenizer_dir is not None:
        cfg.tokenizer.path = str(source.tokenizer_dir)


def check_vocabulary(source: InitSource, tokenizer):
    """The new run's tokenizer must be the source's, token for token (its embedding rows are the source's)."""
    where = source.tokenizer_dir
    if where is None:
        return
    theirs, mine = load_tokenizer(str(where)).get_vocab(), tokenizer.get_vocab()
    if theirs == mine:
        return
    new = sorted(set(mine) - set(theirs), key=mine.get)
    gone = sorted(set(theirs) - set(mine), key=theirs.get)
    moved = sum(1 for t in set(mine) & set(theirs) if mine[t] != theirs[t])
    raise UserError(f"model.init_from {source.name}: the new run's vocabulary is not the source's ({len(new)} token(s) "
                    f"only in the new one{', e.g. ' + ' '.join(new[:3]) if new else ''}; {len(gone)} only in the "
                    f"source's; {moved} with other ids); leave tokenizer.path unset to use the source's tokenizer, "
                    f"with an objective whose special tokens it has")


# ---- loading ---------------------------------------------------------------------------------------------------
def plan_for(source: InitSource, model_cfg: ModelConfig, say=print):
    """Check (before anything is written) that the source fits a model of `model_cfg`, and say what will happen."""
    with torch.device("meta"):
        target = Transformer(model_cfg)
    plan = source.plan(target)
    say(f"init_from: {source.what}")
    moved = [f"its {origin} as the {stack}" for stack, origin in plan.stacks.items() if stack != origin]
    say(f"init_from: {len(plan.names)} tensors carried over{' (' + ', '.join(moved) + ')' if moved else ''}; "
        f"steps, optimizer and schedule start fresh")
    if plan.fresh:
        say(f"init_from: initialized fresh ({model_cfg.init} init): {summary(plan.fresh)}")
    if plan.dropped:
        say(f"init_from: dropped from the source: {summary(plan.dropped)}")
    if plan.stated:
        say(f"init_from: differs from the source: {', '.join(plan.stated)}")
    return plan


def load_source(model, source: InitSource, plan=None) -> None:
    """The source's corresponding tensors into `model` (bit-identical); the others keep the model's fresh init."""
    model.load_state_dict((plan or source.plan(model)).tensors(source.state), strict=False)
