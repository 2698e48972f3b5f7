"""`pretrain score`: zero-shot minimal pairs, one model, every family scored by the same rule.

    pretrain score MODEL [--pairs grammar corpus 'blimp/*.jsonl' pairs.csv ...] [--good-column C --bad-column C]
                         [--variant word|token] [--corpus-pairs 400] [--seed 0] [--json] [--checkpoint step_N]

MODEL: a run directory (its own model and objective), an exported folder, or any transformers folder / Hub id.
Sources: `grammar` (built in), `corpus` (the run's held-out validation text, perturbed; `corpus:RUN` or
`corpus:FILE_OR_GLOB.txt` for another text), BLiMP JSONL files, csv / jsonl with two named columns, globs.
Everything is read and checked before the model is loaded; for a run, the results also go to RUN/score/results.json
(in one atomic write, after scoring), where an export's model card finds them.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import ConfigError, UserError
from ..train.run_dir import RunDir
from .classifier import is_run
from .pairs import BAD, GOOD, Pair, load_source
from .grammar import grammar_pairs
from .perturb import corpus_pairs
from .score import check_scorable, open_scorer, score_pairs

DEFAULT_SOURCES = ("grammar", "corpus")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{message}; run `pretrain score --help` for the options")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pretrain score", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="a run directory, an exported folder, or a transformers folder / Hub id")
    p.add_argument("--pairs", nargs="+", default=None,
                   help="grammar, corpus, corpus:RUN, corpus:TEXT_GLOB, BLiMP .jsonl, .csv/.jsonl files or globs "
                        "(default: grammar, plus corpus for a run)")
    p.add_argument("--good-column", default=GOOD)
    p.add_argument("--bad-column", default=BAD)
    p.add_argument("--variant", choices=("word", "token"), default="word",
                   help="the hole of a masked / span / infilling score: the token and the rest of its word (Kauf & "
                        "Ivanova 2023) or the token alone (Salazar et al. 2020)")
    p.add_argument("--corpus-pairs", type=int, default=400, help="pairs made from the corpus (a quarter each kind)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus pairs")
    p.add_argument("--checkpoint", help="with a run: step_N instead of final/")
    p.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per forward pass")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_validation_texts(run: Path) -> list[str]:
    from ..data.corpus import load_corpus, quiet_datasets
    from ..data.packing import validation_texts
    from ..train.saved_run import read_config

    rd = RunDir(run)
    config = read_config(rd, rd.final) if rd.final.is_dir() else None
    config = config or read_config(rd, rd.path)
    if config is None:
        raise UserError(f"{run} has no config.yaml, so its corpus is unknown; pass corpus:TEXT_FILE instead")
    with quiet_datasets():  # no "training split" / "validation split" bars above the results
        _, val = load_corpus(config.data)
        texts = list(validation_texts(val)["text"])
    if not texts:
        raise UserError(f"{run} has no validation split to make corpus pairs from; raise data.validation_fraction")
    return texts


def corpus_source(spec: str, model: str, n: int, seed: int) -> dict[str, list[Pair]]:
    where = spec.partition(":")[2] or model
    path = Path(where)
    if path.is_dir() and is_run(path):
        texts = run_validation_texts(path)
    else:
        files = sorted(glob.glob(where)) if any(c in where for c in "*?[") else [where]
        files = [f for f in files if Path(f).is_file()]
        if not files:
            raise UserError(f"--pairs {spec}: {where} is neither a run directory nor a text file; pass "
                            f"corpus:RUN_DIR or corpus:FILE.txt")
        texts = [Path(f).read_text(encoding="utf-8", errors="replace") for f in files]
    pairs = corpus_pairs(texts, n, seed)
    if not pairs:
        raise UserError(f"--pairs {spec}: no sentence of 6-30 words to perturb in {where}; pass more text")
    return {"corpus" if spec == "corpus" else spec: pairs}


def gather_sources(specs, model: str, args) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {}
    for spec in specs:
        if spec == "grammar":
            out["grammar"] = grammar_pairs()
        elif spec == "corpus" or spec.startswith("corpus:"):
            out.update(corpus_source(spec, model, args.corpus_pairs, args.seed))
        else:
            out.update(load_source(spec, args.good_column, args.bad_column))
    return out


def summary_lines(name: str, result: dict) -> list[str]:
    s = result["skipped"]
    skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in s.items() if v)
    lines = [f"{name}: {100 * result['accuracy']:.1f}% ± {100 * result['stderr']:.1f} of {result['n']} pairs"
             + (f" (skipped: {skipped})" if skipped else "")]
    if len(result["groups"]) > 1:
        width = max(len(g) for g in result["groups"])
        lines += [f"  {g:<{width}}  {100 * r['accuracy']:5.1f}% ± {100 * r['stderr']:4.1f}  (n={r['n']})"
                  for g, r in result["groups"].items()]
    return lines


def score_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    for name in ("corpus_pairs", "batch_tokens"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)} must be a positive integer")
    run = Path(args.model) if Path(args.model).is_dir() and is_run(Path(args.model)) else None
    specs = args.pairs or (DEFAULT_SOURCES if run else ("grammar",))
    if "corpus" in specs and run is None:
        raise UserError(f"--pairs corpus needs MODEL to be a run (its validation text); {args.model} is not one: "
                        f"pass corpus:RUN_DIR or corpus:FILE.txt")
    sources = gather_sources(specs, args.model, args)
    scorer = open_scorer(args.model, args.variant, args.checkpoint)
    print(f"{scorer.description}: {scorer.method}", file=sys.stderr if args.json else sys.stdout, flush=True)
    results = {}
    for name, pairs in sources.items():
        progress = None
        if not args.no_progress:
            from tqdm.auto import tqdm

            progress = tqdm(desc=f"scoring {name}", unit="sentence", leave=False, file=sys.stderr)
        try:
            results[name] = score_pairs(scorer, pairs, args.batch_tokens, progress=progress)
        finally:
            if progress is not None:
                progress.close()
        check_scorable(results[name], name)
    report = {"model": args.model, "description": scorer.description, "method": scorer.method,
              "variant": args.variant, "seed": args.seed, "sources": results}
    if run is not None and not args.checkpoint:
        out = RunDir(run).path / RunDir.SCORE / RunDir.FINETUNE_RESULTS
        out.parent.mkdir(exist_ok=True)
        write_text_atomic(out, json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, result in results.items():
            print("\n".join(summary_lines(name, result)))
    return 0

