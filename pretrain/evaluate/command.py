"""`pretrain finetune`: fine-tune and probe a pretrained model on a labelled classification task.

    pretrain finetune RUN_OR_EXPORTED_FOLDER [--task stdlib-area | --task train.csv | --task hub:DATASET[:CONFIG]]
                      [--validation F] [--test F] [--text-column C] [--text-pair-column C] [--label-column C]
                      [--mode both|finetune|probe] [--seeds 3] [--no-baseline] [--epochs N] [--lr X] ...

Everything is checked (task files, columns, labels, the model's export) before anything is written; the results
go to RUN/finetune/<task>/results.json (or --out DIR/results.json) in one atomic write, and the temporary export
of a run is removed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ..atomic import unwritable_reason, write_text_atomic
from ..data.builtin_task import BUILTIN_TASK
from ..errors import ConfigError, UserError
from ..train.run_dir import RunDir
from .classifier import is_run, open_backbone
from .evaluate import evaluate, summary_lines
from .recipe import FinetuneRecipe, ProbeRecipe
from .tasks import TaskSpec, load_task

RESULTS = RunDir.FINETUNE_RESULTS


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump: the CLI prints `error: ...` and exits 2
        raise ConfigError(f"{message}; run `pretrain finetune --help` for the options")


def build_parser() -> argparse.ArgumentParser:
    r = FinetuneRecipe()
    p = _Parser(prog="pretrain finetune", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="a run directory (exported to its transformers class first) or an exported "
                                  "transformers folder")
    p.add_argument("--task", default=BUILTIN_TASK,
                   help=f"'{BUILTIN_TASK}' (built-in, offline), a local .csv / .jsonl / .parquet training file, or "
                        f"hub:DATASET[:CONFIG] (e.g. hub:nyu-mll/glue:sst2, online)")
    p.add_argument("--validation", help="local validation file (default: a seeded split of --task)")
    p.add_argument("--test", help="local test file (default: a seeded split of --task)")
    p.add_argument("--text-column", help="default: text, sentence, premise, question, sentence1, ... as present")
    p.add_argument("--text-pair-column", help="a second text column (sentence pairs)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--split", default="0.1,0.1", help="validation,test fractions for a single task file")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-train", type=int, help="train on a seeded sample of this many examples")
    p.add_argument("--mode", choices=("both", "finetune", "probe"), default="both")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds (0..N-1); median, min and max reported")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init baseline")
    p.add_argument("--encoder-pooling", action="store_true",
                   help="encoder-decoders: also judge the encoder alone (a linear head on its mean-pooled states)")
    p.add_argument("--epochs", type=int, default=r.epochs)
    p.add_argument("--lr", type=float, default=r.lr)
    p.add_argument("--batch-size", type=int, default=r.batch_size)
    p.add_argument("--warmup-ratio", type=float, default=r.warmup_ratio)
    p.add_argument("--weight-decay", type=float, default=r.weight_decay)
    p.add_argument("--max-length", type=int, default=r.max_length, help="tokens per example (truncated)")
    p.add_argument("--checkpoint", help="with a run: step_N instead of final/")
    p.add_argument("--out", help="folder for results.json (default: SOURCE/finetune/<task>)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _positive(name: str, value, integer: bool = True):
    if value is not None and value <= 0:
        raise ConfigError(f"--{name} {value} must be positive{' (an integer)' if integer else ''}")


def parse(argv: list[str]) -> tuple[argparse.Namespace, TaskSpec, FinetuneRecipe, ProbeRecipe]:
    args = build_parser().parse_args(argv)
    for name in ("seeds", "epochs", "batch_size", "max_length", "max_train"):
        _positive(name.replace("_", "-"), getattr(args, name))
    _positive("lr", args.lr, integer=False)
    if not 0 <= args.warmup_ratio < 1:
        raise ConfigError(f"--warmup-ratio {args.warmup_ratio} must be in [0, 1), e.g. 0.1")
    if args.weight_decay < 0:
        raise ConfigError(f"--weight-decay {args.weight_decay} must be >= 0")
    try:
        fractions = tuple(float(x) for x in args.split.split(","))
        assert len(fractions) == 2
    except (ValueError, AssertionError):
        raise ConfigError(f"--split {args.split!r} must be two fractions VALIDATION,TEST, e.g. 0.1,0.1") from None
    spec = TaskSpec(task=args.task, validation=args.validation, test=args.test, text_column=args.text_column,
                    text_pair_column=args.text_pair_column, label_column=args.label_column,
                    split_fractions=fractions, split_seed=args.split_seed, max_train=args.max_train)
    recipe = FinetuneRecipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
                            max_length=args.max_length)
    return args, spec, recipe, ProbeRecipe(max_length=args.max_length)


def results_dir(source: Path, task_name: str, out: str | None) -> Path:
    """--out, else RUN/finetune/<task> (a run) or FOLDER/finetune/<task> (an exported folder)."""
    if out:
        return Path(out)
    return (RunDir(source).finetune if is_run(source) else source / RunDir.FINETUNE) / task_name


def finetune_main(argv: list[str] | None = None) -> int:
    args, spec, recipe, probe_recipe = parse(list(sys.argv[1:] if argv is None else argv))
    task = load_task(spec)
    out = results_dir(Path(args.source), task.name, args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")
    reason = unwritable_reason(out if out.is_dir() else out / RESULTS)  # an earlier results.json is replaced
    if reason:
        raise UserError(f"cannot write {out / RESULTS} ({reason}); choose another --out")
    modes = ("probe", "finetune") if args.mode == "both" else (args.mode,)
    with tempfile.TemporaryDirectory(prefix="pretrain-finetune-") as workdir:
        backbone = open_backbone(args.source, Path(workdir), args.checkpoint)
        sizes = ", ".join(f"{task.size(s):,} {s}" for s in task.splits)
        print(f"{task.name}: {task.num_labels} classes, {sizes}; {backbone.description} "
              f"({backbone.model_type}, {backbone.arch})", flush=True)
        for note in task.notes:
            print(f"  note: {note}", flush=True)
        results = evaluate(backbone, task, modes, tuple(range(args.seeds)), not args.no_baseline, recipe,
                           probe_recipe, progress=not args.no_progress, encoder_pooling=args.encoder_pooling)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / RESULTS, json.dumps(results, indent=2))
    for line in summary_lines(results):
        print(line)
    print(f"results: {out / RESULTS}")
    return 0
