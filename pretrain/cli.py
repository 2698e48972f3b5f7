"""The `pretrain` command: one entry point whose subcommands share the config system.

    pretrain train [--config X.yaml] [--section.key value ...] [--resume] [--overwrite]
    pretrain prepare [--config X.yaml] [--section.key value ...]
    pretrain eval RUN_DIR [--batches N] [--checkpoint step_N] [--document-masking on|off]
    pretrain export RUN_DIR --out DIR [--push-to-hub ORG/NAME]   |   pretrain export --from-hub ID --out RUN
    pretrain finetune RUN_OR_FOLDER [--task stdlib-area | --task train.csv | --task hub:DATASET[:CONFIG]]
    pretrain score RUN_OR_FOLDER_OR_HUB_ID [--pairs grammar corpus 'blimp/*.jsonl' ...] [--json]
    pretrain compare CONFIG.yaml [--only a+b,c+d]
    pretrain attention RUN_DIR --text "..." [--out maps.png]

User mistakes print `error: <one line>` on stderr, exit status 2 for usage / configuration errors and 1 for errors
at run time, without a traceback. A run stopped by SIGTERM or Ctrl-C after writing its checkpoint prints one line
with the command that continues it and exits 75 (resumable); a second Ctrl-C aborts with 130. Each subcommand
imports its (heavy) modules only when it runs, so `pretrain`, `pretrain --help` and a mistyped command answer at
once.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

USAGE = """usage: pretrain <command> [options]

commands:
  train      train a model: pretrain train [--config X.yaml] [--model.preset bert] [--objective.name mlm] ...
  prepare    train the tokenizer and tokenize the corpus once, for the runs to come (same options as train)
  eval       evaluate a finished run on its validation split: pretrain eval RUN_DIR
  export     a run -> a Hugging Face folder / the Hub, or a Hugging Face model -> a run
  finetune   fine-tune and probe a pretrained model on a classification task (built-in, local files, Hub)
  score      zero-shot minimal pairs (built-in grammar set, pairs from the corpus, BLiMP files) for any model
  compare    train several objectives on one corpus at an equal budget and write a report
  attention  plot a trained model's attention weights for a text

`pretrain <command> --help` lists a command's options."""


def cmd_train(argv: list[str]) -> int:
    from .train.main import train_main

    train_main(None, argv, prog="pretrain train")
    return 0


def cmd_prepare(argv: list[str]) -> int:
    from .train.prepare import prepare_main

    return prepare_main(argv)


def cmd_eval(argv: list[str]) -> int:
    from .train.eval_run import evaluate_run

    parser = argparse.ArgumentParser(prog="pretrain eval", description="Validation metrics of a finished run.")
    parser.add_argument("run_dir", help="a run directory written by `pretrain train` or a recipe")
    parser.add_argument("--batches", type=int, default=None, help="evaluate at most this many batches")
    parser.add_argument("--checkpoint", default=None, help="step_N, N or a checkpoint directory instead of RUN_DIR/final")
    parser.add_argument("--document-masking", choices=("on", "off"), default=None,
                        help="evaluate with attention inside each document (on) or across the block (off) "
                             "instead of as the run trained")
    args = parser.parse_args(argv)
    masking = None if args.document_masking is None else args.document_masking == "on"
    print(json.dumps(evaluate_run(args.run_dir, args.batches, args.checkpoint, masking), indent=2))
    return 0


def cmd_export(argv: list[str]) -> int:
    from .export.command import export_main

    return export_main(argv)


def cmd_finetune(argv: list[str]) -> int:
    from .evaluate.command import finetune_main

    return finetune_main(argv)


def cmd_score(argv: list[str]) -> int:
    from .evaluate.score_command import score_main

    return score_main(argv)


def cmd_compare(argv: list[str]) -> int:
    from .compare.runner import compare_main

    return compare_main(argv)


def cmd_attention(argv: list[str]) -> int:
    from .inspect.attention import DEFAULT_TEXT, attention_picture
    from .train.saved_run import load_run_model

    parser = argparse.ArgumentParser(prog="pretrain attention",
                                     description="One layer's attention weights (all heads) of a run on a sentence, "
                                                 "as a PNG grid of heatmaps labelled with the tokens.")
    parser.add_argument("run_dir", help="a run directory written by `pretrain train`, a recipe or `pretrain compare`")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the sentence to look at (default: %(default)r)")
    parser.add_argument("--layer", type=int, default=-1, help="layer index per stack; negative counts from the end "
                                                              "(default: -1, the last)")
    parser.add_argument("--out", default=None, help="PNG path (default: RUN/attention_layer<L>.png)")
    parser.add_argument("--checkpoint", default=None, help="step_N or a checkpoint directory instead of final/")
    args = parser.parse_args(argv)
    model, model_cfg, tokenizer, record = load_run_model(args.run_dir, args.checkpoint)
    out = args.out or str(Path(args.run_dir) / f"attention_layer{args.layer}.png")
    title = f"{Path(args.run_dir).name}: {model_cfg.arch} ({record.objective_name or '?'}), layer {args.layer}"
    print(attention_picture(model, tokenizer, args.text, out, args.layer, title))
    return 0


COMMANDS = {"train": cmd_train, "prepare": cmd_prepare, "eval": cmd_eval, "export": cmd_export,
            "finetune": cmd_finetune, "score": cmd_score, "compare": cmd_compare, "attention": cmd_attention}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_guarded(COMMANDS[command], rest)


def run_guarded(fn, argv, continue_with=None) -> int:
    """Run a command; UserError -> `error: msg` (exit 2 for ConfigError, 1 otherwise), no traceback. Stopped ->
    one line naming the step and the command that continues (continue_with(run_dir) -> command), exit 75."""
    from .errors import ConfigError, Stopped, UserError  # models.errors: importing it loads the backbone

    continue_with = continue_with or (lambda run_dir: f"pretrain train --run.output_dir {shlex.quote(run_dir)} "
                                                      f"--resume")
    try:
        return fn(argv) or 0
    except Stopped as e:
        if int(os.environ.get("RANK", "0") or 0) == 0:
            print(f"stopped {e}; continue with: {continue_with(str(e.run_dir))}", file=sys.stderr, flush=True)
        return Stopped.EXIT_STATUS
    except ConfigError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; continue with --resume (the last complete checkpoint is kept)", file=sys.stderr)
        return 130


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split("\n")).strip()


def run_recipe(defaults: dict, argv=None):
    """What a recipe file calls: train with the recipe's defaults, errors printed like the CLI's; `recipe.py
    prepare [flags]` prepares its tokenizer and token cache instead (pretrain prepare)."""
    from .train.main import train_main

    prog = f"python {Path(sys.argv[0]).name}" if sys.argv and sys.argv[0] else "recipe"
    argv = list(sys.argv[1:] if argv is None else argv)
    script = shlex.quote(sys.argv[0]) if sys.argv and sys.argv[0] else "the recipe"
    if argv[:1] == ["prepare"]:  # the recipe's tokenizer and token cache, built once (pretrain prepare)
        from .train.prepare import prepare_main

        sys.exit(run_guarded(lambda a: prepare_main(a, defaults, f"{prog} prepare"), argv[1:]))
    sys.exit(run_guarded(lambda a: train_main(defaults, a, prog=prog) and 0, argv,
                         continue_with=lambda run_dir: f"python {script} --run.output_dir {shlex.quote(run_dir)} "
                                                       f"--resume"))


if __name__ == "__main__":
    sys.exit(main())
