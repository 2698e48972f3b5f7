"""The composition root: a config becomes a run -- tokenizer, model config, objective, block length, blocks and
model (the step budget follows from the block length: pretrain/train/budget.py). `pretrain train`, `pretrain eval`
and `pretrain compare` all build their runs here.

    spec = run_spec(cfg, tokenizer)              # model config, objective, block length: no files read or written
    run = build_run(cfg, accelerator)            # corpus read once, tokenizer, spec, blocks; then the run directory

Every check that bad input can fail (config, corpus, tokenizer, objective against model and tokenizer, model.init_from's
weights and vocabulary against the model and tokenizer, the resume
checkpoint, packing) runs before the first file of the run directory is written, so a refused command leaves
nothing behind and the corrected one runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

from models import ModelConfig, Transformer
from models.transfer import Transfer
from objectives import build_objective, objective_class

from ..atomic import unwritable_reason
from ..data.corpus import count_documents, describe_corpus, load_corpus, quiet_datasets
from ..data.order import mix_seed
from ..data.packing import pack_splits, packing_stats
from ..data.tokenizer import (ensure_special_tokens, load_tokenizer, prepared_tokenizer_dir, tokenizer_fingerprint,
                              tokenizer_for)
from ..errors import ConfigError, UserError
from .checkpoint import CheckpointManager
from .config import TrainConfig, config_hash, resolve_model_config, saved_form, to_yaml
from .decay import source_run
from .engines import check_deepspeed, fsdp_on_cpu
from .hardware import apply_determinism, resolve_precision
from .init_from import InitSource, check_vocabulary, init_source, load_source, plan_for
from .run_dir import RunDir
from .run_lock import RunLock


# ---- the run's parts, from a config and a tokenizer -----------------------------------------------------------
def token_ids(tokenizer) -> dict:
    """The special-token roles a model config takes from the tokenizer."""
    return {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id,
            "bos": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id}


def model_config_for(cfg: TrainConfig, tokenizer) -> ModelConfig:
    """The network a config trains with this tokenizer: the preset sized by model.*, vocabulary and special ids
    from the tokenizer."""
    model_cfg = resolve_model_config(cfg, len(tokenizer), token_ids(tokenizer))
    if model_cfg.vocab_size < len(tokenizer):
        raise ConfigError(f"model.vocab_size {model_cfg.vocab_size} is smaller than the tokenizer's {len(tokenizer)} "
                          f"tokens; remove model.vocab_size (it defaults to the tokenizer's) or raise it")
    return model_cfg


@dataclass
class RunSpec:
    """What a config trains, before any data is read."""
    model_cfg: ModelConfig
    objective: object  # objectives.base.Objective
    block_length: int  # raw corpus tokens per example


def run_spec(cfg: TrainConfig, tokenizer, model_cfg: ModelConfig | None = None) -> RunSpec:
    """The model config (given, or the config's for this tokenizer), the objective built for it and the block
    length. Options and contradictions are refused as ConfigError (exit 2)."""
    model_cfg = model_cfg or model_config_for(cfg, tokenizer)
    try:
        with torch.random.fork_rng(devices=[]):  # an objective's own parameters: the same for the same seed
            torch.manual_seed(mix_seed(cfg.run.seed, "objective"))
            objective = build_objective(cfg.objective.name, tokenizer, model_cfg,
                                        documents=cfg.objective.document_masking, **cfg.objective.options)
        block_length = objective.block_length(cfg.run.seq_len)
    except UserError as e:
        raise ConfigError(" ".join(str(e).split())) from None
    return RunSpec(model_cfg, objective, block_length)


def cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.run.cache_dir) if cfg.run.cache_dir else Path.home() / ".cache" / "unified_pretrain"


def corpus_blocks(cfg: TrainConfig, tokenizer, block_length: int, texts=None, rank: int = 0, world_size: int = 1):
    """(train_blocks, val_blocks) of the config's corpus (`texts`: its two splits, when already read)."""
    train_texts, val_texts = texts if texts is not None else load_corpus(cfg.data)
    return pack_splits(train_texts, val_texts, cfg.data, tokenizer, block_length, str(cache_dir(cfg)), rank,
                       world_size)


def run_state(cfg: TrainConfig, spec: RunSpec, tokenizer) -> dict:
    """What every checkpoint records about the run, so a resume can refuse a checkpoint of another one."""
    return {"config_hash": config_hash(cfg), "arch": spec.model_cfg.arch, "vocab_size": spec.model_cfg.vocab_size,
            "tokenizer": tokenizer_fingerprint(tokenizer), "objective": spec.objective.name,
            "model": spec.model_cfg.to_dict()}


def check_resume(saved: dict, expected: dict, path: Path):
    old = saved.get("model") or {}
    new_cfg = ModelConfig.from_dict(expected["model"])
    differing = [f"{k} {old.get(k)!r} -> {getattr(new_cfg, k)!r}" for k in new_cfg.weight_differences(old)
                 if k in old]
    if differing:
        raise ConfigError(f"checkpoint {path} holds a different model ({', '.join(differing[:4])}); resume with "
                          f"the run's own model settings or start a new --run.output_dir")
    for key, what in (("arch", "architecture"), ("vocab_size", "vocabulary size"), ("tokenizer", "tokenizer"),
                      ("objective", "objective")):
        if key in saved and saved[key] != expected.get(key):
            raise ConfigError(f"checkpoint {path} was trained with {what} {saved[key]!r} but the config now gives "
                              f"{expected.get(key)!r}; resume with the run's own config or start a new "
                              f"--run.output_dir")


# ---- the model ------------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, model_cfg: ModelConfig, init: InitSource | None = None,
                plan: Transfer | None = None) -> Transformer:
    """The same initial weights for the same seed; with `init` (model.init_from, checked by plan_for) the source's
    corresponding tensors replace them (continued pretraining)."""
    torch.manual_seed(mix_seed(cfg.run.seed, "init"))
    model = Transformer(model_cfg)
    if init is not None:
        load_source(model, init, plan)
    return model


def init_from_pretrained(model, path, say=print) -> None:
    """Load into `model` what corresponds of model.init_from `path` (pretrain/train/init_from.py); the tensors the
    source lacks keep the model's fresh init. UserError for what does not fit."""
    source = init_source(str(path))
    load_source(model, source, plan_for(source, model.config, say))


# ---- the process group ----------------------------------------------------------------------------------------
def make_accelerator(cfg, run_dir: Path, log_with) -> Accelerator:
    apply_determinism(cfg.run.deterministic)
    precision = resolve_precision(cfg.run.mixed_precision)
    # without an accelerator Accelerate only forms a multi-process (gloo) group when told it runs on CPU:
    # that is what makes `torchrun --nproc_per_node 2` really data-parallel here
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else \
        torch.cuda.is_available()
    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / RunDir.TENSORBOARD))
    _forget_earlier_accelerator()
    check_deepspeed(has_accelerator)
    try:
        accelerator = Accelerator(cpu=not has_accelerator, mixed_precision=precision,
                                  gradient_accumulation_steps=cfg.run.grad_accum, log_with=log_with,
                                  project_config=project, kwargs_handlers=[
                                      InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.run.dist_timeout))])
    except ValueError as e:
        raise ConfigError(f"run.mixed_precision {precision}: {e}".splitlines()[0]) from None
    fsdp_on_cpu(accelerator)
    return accelerator


def _forget_earlier_accelerator():
    """A second run in one process (a notebook, the comparison, tests) may ask for another precision, which
    Accelerate refuses once its state is set: forget the earlier run's settings (the process group stays)."""
    try:
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    except AttributeError:  # an accelerate without these hooks: the next Accelerator copes or says why
        pass


# ---- a whole run ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    cfg: TrainConfig
    run_dir: RunDir
    tokenizer: object
    spec: RunSpec
    train_blocks: object
    val_blocks: object
    resume_from: Path | None  # the checkpoint to continue from (None: start at step 0)
    state: dict  # run_state(): recorded in every checkpoint
    packing: dict  # packing_stats() of the training blocks (of validation's when streaming)
    init: InitSource | None = None  # model.init_from, for a run that starts at step 0
    plan: Transfer | None = None  # which of its tensors go where
    lock: RunLock | None = None  # the main process's hold on the run directory (release() when the run ends)


def resume_point(cfg: TrainConfig, run_dir: RunDir, say=print) -> Path | None:
    """The checkpoint to resume from, or None; refuses a directory that holds another run (nothing touched). A
    decay run (run.decay_from) starts from the source run's checkpoint until it has one of its own."""
    start = Path(cfg.run.decay_from) if cfg.run.decay_from else None
    if cfg.run.resume == "auto":
        latest = run_dir.latest_checkpoint()
        if latest is None:
            say(f"--resume: no complete checkpoint in {run_dir.checkpoints}; starting from "
                f"{start or 'step 0'}")
        return latest or start
    if run_dir.holds_run() and not cfg.run.overwrite:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                          f"or choose another --run.output_dir")
    return start


def check_writable(path: Path):
    """Refuse an output directory that cannot be made or written, without making anything."""
    reason = unwritable_reason(path)
    if reason:
        raise UserError(f"run directory {path} is not writable ({reason}); choose another --run.output_dir")


def build_run(cfg: TrainConfig, accelerator) -> Run:
    """The main process locks the run directory (a second writer is refused before anything is read or written),
    reads the corpus (once), makes the tokenizer, the spec and the blocks, and only then writes the run directory;
    the other processes then read its tokenizer and the blocks' cache. The caller releases run.lock."""
    run_dir = RunDir(cfg.run.output_dir)

    def lock():
        check_writable(run_dir.path)
        return RunLock(run_dir.path).acquire()

    held = on_main_first(accelerator, lock, lambda: None)
    try:
        resume_from = resume_point(cfg, run_dir, say=print if accelerator.is_main_process else lambda line: None)
        replacing = cfg.run.resume != "auto" and cfg.run.overwrite  # a fresh start: nothing earlier is reused
        accelerator.wait_for_everyone()  # every process has looked at the directory before the main one writes

        def prepare_main():
            run = _prepare(cfg, run_dir, resume_from, accelerator, reuse_tokenizer=not replacing)
            _write(run, replacing)
            return run

        run = on_main_first(accelerator, prepare_main,
                            lambda: _prepare(cfg, run_dir, resume_from, accelerator, reuse_tokenizer=True))
    except BaseException:
        if held is not None:
            held.release(discard=True)  # a refused run leaves no directory it made
        raise
    run.lock = held
    return run


def on_main_first(accelerator, main, others):
    """main() on the main process, then others() everywhere else. The others wait as long as the main process
    takes (reading and packing a corpus can outlast run.dist_timeout: a gloo group of its own, without it) and
    stop with its error line when it refuses the input."""
    if accelerator.num_processes == 1:
        return main()
    group = dist.new_group(backend="gloo", timeout=timedelta(days=1))
    outcome, result = [None], None
    if accelerator.is_main_process:
        try:
            result = main()
        except UserError as e:
            outcome = [(isinstance(e, ConfigError), str(e))]
        dist.broadcast_object_list(outcome, src=0, group=group)
    else:
        dist.broadcast_object_list(outcome, src=0, group=group)
    dist.destroy_process_group(group)
    if outcome[0] is not None:
        usage, message = outcome[0]
        raise (ConfigError if usage else UserError)(message)
    return result if accelerator.is_main_process else others()


def _prepare(cfg, run_dir: RunDir, resume_from, accelerator, reuse_tokenizer: bool) -> Run:
    say = print if accelerator.is_main_process else (lambda line: None)
    roles = objective_class(cfg.objective.name).special_tokens
    with quiet_datasets():
        texts = load_corpus(cfg.data)
        say(f"corpus: {describe_corpus(cfg.data)}: {count_documents(texts[0])} training / "
            f"{count_documents(texts[1])} validation documents")
        prepared = prepared_tokenizer_dir(cache_dir(cfg), cfg.tokenizer, texts[0], roles, cfg.data.seed)
        if reuse_tokenizer and run_dir.tokenizer.is_dir():  # resume, or the main process's for the others
            tokenizer = run_dir.read_tokenizer()
        elif cfg.run.decay_from:  # a decay continues the source run: its tokenizer
            tokenizer = source_run(cfg.run.decay_from).read_tokenizer()
        elif prepared is not None and prepared.is_dir():
            tokenizer = load_tokenizer(str(prepared))
            say(f"tokenizer: made by `pretrain prepare` for this corpus ({prepared}), {len(tokenizer):,} tokens")
        else:
            tokenizer = tokenizer_for(cfg.tokenizer, texts[0], roles, seed=cfg.data.seed,
                                      progress=accelerator.is_main_process)
            say(tokenizer_summary(cfg, tokenizer))
        tokenizer = ensure_special_tokens(tokenizer, roles)
        init = init_source(cfg.model.init_from) if cfg.model.init_from and resume_from is None else None
        if init is not None:
            check_vocabulary(init, tokenizer)
        spec = run_spec(cfg, tokenizer)
        plan = plan_for(init, spec.model_cfg, say) if init is not None else None
        state = run_state(cfg, spec, tokenizer)
        if resume_from is not None:  # before the (slow) packing: a mismatched checkpoint is refused at once
            check_resume(CheckpointManager.read_state(resume_from), state, resume_from)
        train_blocks, val_blocks = corpus_blocks(cfg, tokenizer, spec.block_length, texts,
                                                 accelerator.process_index, accelerator.num_processes)
        packing = packing_stats(train_blocks if hasattr(train_blocks, "__len__") else val_blocks,
                                tokenizer.eos_token_id, tokenizer.pad_token_id)
        say(packing_summary(packing, cfg))
    return Run(cfg, run_dir, tokenizer, spec, train_blocks, val_blocks, resume_from, state, packing, init, plan)


def packing_summary(packing: dict, cfg: TrainConfig) -> str:
    which = " (of the validation blocks: the training corpus streams)" if cfg.data.streaming else ""
    attention = "inside each document" if cfg.objective.document_masking else "across the whole block"
    return (f"packing{which}: {packing['documents_per_block']:.2f} documents per block (pieces included), "
            f"{packing['real_token_fraction']:.1%} real tokens, mean document length "
            f"{packing['mean_document_length']:.1f} tokens; attention {attention}")


def tokenizer_summary(cfg: TrainConfig, tokenizer) -> str:
    """One line on the tokenizer just made; it says so when the corpus gave another size than asked."""
    t = cfg.tokenizer
    if t.path:
        return f"tokenizer: loaded from {t.path}, {len(tokenizer):,} tokens"
    size = tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=False)
    line = f"tokenizer: trained {t.kind}, {len(tokenizer):,} tokens"
    if size != t.vocab_size:
        why = "the corpus has too little text for more" if size < t.vocab_size else \
            "a tokenizer needs every character of the corpus"
        line += f" (warning: tokenizer.vocab_size asked {t.vocab_size:,}; {why})"
    return line


def _write(run: Run, replacing: bool):
    """The run directory, once everything bad input can fail has passed. A resumed run's config is rewritten
    only after its checkpoint has loaded (pretrain.train.main), so a failed resume changes nothing."""
    run_dir = run.run_dir
    try:
        if replacing:
            run_dir.clear()
        run_dir.path.mkdir(parents=True, exist_ok=True)
        if run.resume_from is None:  # config first: a directory holding anything of ours then holds a run
            run_dir.write_config(to_yaml(saved_form(run.cfg)))
            run_dir.write_model_config(run.spec.model_cfg)
        if not run_dir.tokenizer.is_dir():
            run_dir.save_tokenizer(run.tokenizer)
    except OSError as e:
        raise UserError(f"run directory {run_dir} cannot be written ({e.strerror or e}); choose another "
                        f"--run.output_dir") from None
