"""`pretrain export`: a run -> a Hugging Face folder (and optionally the Hub); a Hugging Face model -> a run.

    pretrain export RUN --out DIR [--checkpoint step_N] [--license L] [--overwrite]
                        [--push-to-hub ORG/NAME [--private] [--revision R]]
    pretrain export --from-hub ID_OR_PATH --out RUN [--objective NAME] [--overwrite]
"""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, UserError
from .folder import usage_error
from .from_hf import import_hub
from .to_hf import export_run


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump: the CLI prints `error: ...` and exits 2
        raise usage_error(f"{message}; run `pretrain export --help` for the options")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pretrain export", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="a run directory written by `pretrain train` or a recipe")
    p.add_argument("--out", required=True, help="the folder to write (a Hugging Face model, or with --from-hub a run)")
    p.add_argument("--checkpoint", help="export RUN/checkpoints/step_N instead of RUN/final (e.g. step_2000)")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", help="also upload the folder to this Hub repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    p.add_argument("--revision", help="push to this branch of the Hub repo (created if needed)")
    p.add_argument("--license", help="license id for the model card metadata (e.g. apache-2.0, mit)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--from-hub", metavar="ID_OR_PATH", help="the reverse: a transformers model -> a run directory")
    p.add_argument("--objective", help="with --from-hub: the objective to continue with (default: the family's)")
    return p


def export_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.from_hub:
        if args.run_dir:
            raise usage_error("give either RUN or --from-hub, not both")
        extra = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--push-to-hub", args.push_to_hub),
                                          ("--private", args.private), ("--revision", args.revision),
                                          ("--license", args.license)) if value]
        if extra:
            raise usage_error(f"{', '.join(extra)} only apply to exporting a run, not to --from-hub")
        import_hub(args.from_hub, args.out, overwrite=args.overwrite, objective=args.objective)
        return 0
    if not args.run_dir:
        raise usage_error("missing the run directory: pretrain export RUN --out DIR (or --from-hub ID --out RUN)")
    if (args.private or args.revision) and not args.push_to_hub:
        raise usage_error("--private and --revision apply to --push-to-hub ORG/NAME; add it or drop them")
    if args.objective:
        raise usage_error("--objective applies to --from-hub only")
    export_run(args.run_dir, args.out, args.checkpoint, overwrite=args.overwrite, license=args.license,
               push_to_hub=args.push_to_hub, private=args.private, revision=args.revision)
    return 0


def main(argv=None) -> int:
    """Stand-alone entry (`python -m pretrain.export ...`): errors as one line, like the pretrain CLI."""
    try:
        return export_main(argv)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1

