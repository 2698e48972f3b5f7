"""`pretrain export`: a run -> a Hugging Face folder (and optionally the Hub); a Hugging Face model -> a run.

    pretrain export RUN --out DIR [--checkpoint step_N] [--license L] [--overwrite]
                        [--push-to-hub ORG/NAME [--private] [--revision R]]
    pretrain export --from-hub ID_OR_PATH --out RUN [--objective NAME] [--overwrite]

The exported folder loads with AutoModelForMaskedLM / AutoModelForCausalLM / AutoModelForSeq2SeqLM and `pipeline`
without custom code: config.json, model.safetensors, generation_config.json (generative models), tokenizer.json +
tokenizer_config.json, README.md (model card) + loss_curve.png + training_config.json. It is written into a
temporary sibling folder and renamed into place, so a failure never leaves a half folder; a config that matches
no transformers family is refused before anything is written.

The reverse (`--from-hub`) writes a run directory whose config.yaml starts from the imported weights
(`model.init_from: RUN/init`) and whose tokenizer/ is the model's: continue pretraining with
`pretrain train --run.output_dir RUN --resume`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import UserError

DEFAULT_OBJECTIVE = {"bert": "mlm", "gpt2": "clm", "llama": "clm", "bart": "infill", "t5": "span"}
LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")


def _usage_error(message: str) -> Exception:
    """A usage mistake: the CLI exits 2 for it."""
    from .config import ConfigError

    error = ConfigError(message)
    error.usage = True
    return error


def _say(message: str):
    print(message, flush=True)


# ---- the output folder -----------------------------------------------------------------------------------------
def check_out_dir(out: Path, overwrite: bool, protect: Path | None = None, flag: str = "--out"):
    """Refuse (before anything is written) an output that is a file, a non-empty folder without --overwrite, or a
    folder holding / inside the run being read."""
    if protect is not None:
        o, p = out.resolve(), protect.resolve()
        if o == p or o in p.parents:
            raise _usage_error(f"{flag} {out} would replace the run directory {protect} itself; choose another {flag}")
    if out.exists() and not out.is_dir():
        raise _usage_error(f"{flag} {out} is a file, not a folder; choose another {flag}")
    if out.is_dir():
        try:
            non_empty = any(out.iterdir())
        except OSError as e:
            raise UserError(f"output directory {out} cannot be read ({e.strerror or e}); choose another "
                            f"{flag}") from None
        if non_empty and not overwrite:
            raise _usage_error(f"output directory {out} already exists and is not empty; pass --overwrite to "
                               f"replace it or choose another {flag}")


def make_temp_dir(out: Path, flag: str = "--out") -> Path:
    """A temporary sibling of out (same filesystem, so the final rename is atomic)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise UserError(f"output directory {out} is not writable ({e.strerror or type(e).__name__}); choose "
                        f"another {flag} or fix its permissions") from None


def commit_dir(tmp: Path, out: Path):
    """Move the finished tmp folder to out, replacing an existing out only once the new one is complete."""
    backup = None
    if out.exists():
        backup = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(backup, ignore_errors=True)
        os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except OSError:
        if backup is not None:
            os.rename(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _write_guarded(out: Path, write, flag: str = "--out") -> Path:
    tmp = make_temp_dir(out, flag)
    try:
        write(tmp)
        commit_dir(tmp, out)
    except OSError as e:
        raise UserError(f"could not write {out} ({e.strerror or type(e).__name__}); free disk space or fix "
                        f"permissions and export again (nothing was left behind)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---- run -> Hugging Face ---------------------------------------------------------------------------------------
def resolve_family(model_cfg) -> str:
    """The transformers family that reproduces model_cfg exactly; UserError naming the differing fields otherwise."""
    from models.hf import FAMILIES, match_family

    family, differing = match_family(model_cfg)
    if differing:
        raise UserError(f"this model matches no transformers family: fields {', '.join(differing)} differ from the "
                        f"nearest family {family} ({FAMILIES[family]}); export supports models trained with the "
                        f"presets {', '.join(FAMILIES)} without changing those fields")
    return family


def build_hf_model(model, model_cfg, tokenizer, family: str):
    """Our model as the family's transformers class, its config and generation config completed from the
    tokenizer (special-token ids) and the model (max positions)."""
    from models.hf import to_transformers

    try:
        hf_model = to_transformers(model, family)
    except ValueError as e:
        raise UserError(f"cannot export: {str(e).splitlines()[0]}") from None
    config = hf_model.config
    roles = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
             "eos_token_id": tokenizer.eos_token_id}
    for key, value in roles.items():  # keep the model's own ids; fill the ones its config left empty
        if getattr(config, key, None) is None and value is not None:
            setattr(config, key, value)
    if model_cfg.arch == "encoder-decoder" and getattr(config, "decoder_start_token_id", None) is None:
        config.decoder_start_token_id = model_cfg.decoder_start_token_id
    if model_cfg.arch != "encoder" and hf_model.can_generate():
        from transformers import GenerationConfig

        gen = GenerationConfig.from_model_config(config)
        for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(config, key, None)
            if value is not None:
                setattr(gen, key, value)
        if gen.pad_token_id is None and gen.eos_token_id is not None:
            gen.pad_token_id = gen.eos_token_id
        hf_model.generation_config = gen
    return hf_model


def export_run(run_dir, out, checkpoint: str | None = None, *, overwrite: bool = False, license: str | None = None,
               push_to_hub: str | None = None, private: bool = False, revision: str | None = None,
               log=_say) -> Path:
    """Export a run (final/ or a checkpoint) to a Hugging Face folder `out`; optionally push it. Returns out."""
    from .hub import check_repo_id, find_token_leaks, get_token, push_folder
    from .model_card import write_model_card
    from .run_dir import load_run_model

    run, out = Path(run_dir), Path(out)
    if push_to_hub:
        check_repo_id(push_to_hub)
    if license is not None and not LICENSE.match(license):
        raise _usage_error(f"invalid --license {license!r}; use a Hub license id such as apache-2.0, mit, other")
    check_out_dir(out, overwrite, protect=run)
    model, model_cfg, tokenizer, info = load_run_model(run, checkpoint)
    family = resolve_family(model_cfg)  # refuse before anything is written
    hf_model = build_hf_model(model, model_cfg, tokenizer, family)
    hf_class = type(hf_model).__name__
    info["out"] = str(out)
    tokenizer.model_max_length = model_cfg.max_seq_len

    def write(tmp: Path):
        hf_model.save_pretrained(str(tmp))
        if getattr(hf_model, "generation_config", None) is not None and model_cfg.arch != "encoder":
            hf_model.generation_config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_model_card(tmp, info, model_cfg, family, hf_class, license=license, repo_id=push_to_hub,
                         tokenizer=tokenizer)
        needed = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"]
        if model_cfg.arch != "encoder":
            needed.append("generation_config.json")
        missing = [name for name in needed if not (tmp / name).is_file()]
        if missing:
            raise UserError(f"export incomplete: {', '.join(missing)} not written; please report this")
        leaks = find_token_leaks(tmp, get_token())
        if leaks:  # never ship a credential
            raise UserError(f"refusing to write {out}: a Hub token appears in {', '.join(Path(p).name for p in leaks)}")

    _write_guarded(out, write)
    files = sorted(p.name for p in out.iterdir())
    log(f"exported {run} ({info['checkpoint']}, step {info.get('step')}) as {hf_class} to {out}: {', '.join(files)}")
    if push_to_hub:
        url = push_folder(out, push_to_hub, private=private, revision=revision,
                          commit_message=f"Upload {hf_class} ({info['checkpoint']}, step {info.get('step')})")
        log(f"pushed {out} to {url}{' (private)' if private else ''}")
    return out


# ---- Hugging Face -> run ---------------------------------------------------------------------------------------
def _load_hf(source: str):
    """(our model, tokenizer) from a transformers folder or Hub id: safetensors only, no remote code."""
    from models.hf import from_transformers

    local = Path(source).exists()
    try:
        model = from_transformers(source)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except UserError:
        raise
    except Exception as e:  # not found, offline, no safetensors, unsupported model_type, ...: one line
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        hint = "check the folder holds config.json, model.safetensors and tokenizer files" if local else \
            "check the id, the network (HF_HUB_OFFLINE must be unset) and access rights"
        raise UserError(f"cannot load {source!r} as a transformers model ({reason}); {hint}") from None
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise UserError(f"{source!r} has no fast tokenizer (tokenizer.json); convert it with "
                        f"transformers' convert_slow_tokenizer first")
    return model, tokenizer


def run_config_yaml(family: str, model_cfg, out: Path, objective: str) -> str:
    """config.yaml of an imported run: the exact architecture (every model field), init_from the imported weights,
    the family's usual objective, the run's own tokenizer."""
    import yaml

    from .config import parse_config, to_yaml

    tree = {"model": {"preset": family, **model_cfg.to_dict(), "init_from": str((out / "init").resolve())},
            "objective": {"name": objective, "options": {}},
            "tokenizer": {"path": str((out / "tokenizer").resolve())},
            "run": {"output_dir": str(out), "seq_len": min(128, model_cfg.max_seq_len)}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(yaml.safe_dump(tree, sort_keys=False))
    try:
        return to_yaml(parse_config(["--config", f.name], None, "pretrain export"))
    finally:
        os.unlink(f.name)


def import_hub(source: str, out, *, overwrite: bool = False, objective: str | None = None, log=_say) -> Path:
    """A transformers model (Hub id or folder) -> a run directory our trainer continues from."""
    from safetensors.torch import save_model

    from models.hf import FAMILIES
    from objectives import OBJECTIVES

    out = Path(out)
    if Path(source).exists():
        check_out_dir(out, overwrite, protect=Path(source))
    else:
        check_out_dir(out, overwrite)
    model, tokenizer = _load_hf(source)
    model_cfg = model.config
    family = resolve_family(model_cfg)
    objective = objective or DEFAULT_OBJECTIVE[family]
    if objective not in OBJECTIVES:
        raise _usage_error(f"unknown --objective {objective!r}; choose one of {', '.join(sorted(OBJECTIVES))}")
    if model_cfg.arch not in OBJECTIVES[objective].archs:
        raise _usage_error(f"--objective {objective} cannot train this {model_cfg.arch} model; use "
                           f"{DEFAULT_OBJECTIVE[family]}")
    if len(tokenizer) > model_cfg.vocab_size:
        raise UserError(f"{source!r}: its tokenizer has {len(tokenizer)} tokens but the model only "
                        f"{model_cfg.vocab_size}; they do not belong together")
    config_text = run_config_yaml(family, model_cfg, out, objective)
    is_local = Path(source).exists()
    source_info = {"source": str(Path(source).resolve()) if is_local else source, "hub": not is_local,
                   "family": family, "hf_class": FAMILIES[family]}

    def write(tmp: Path):
        (tmp / "init").mkdir()
        save_model(model, str(tmp / "init" / "model.safetensors"), metadata={"format": "pt", "arch": model_cfg.arch})
        for where in (tmp, tmp / "init"):
            (where / "model_config.json").write_text(json.dumps(model_cfg.to_dict(), indent=2))
        (tmp / "init" / "source.json").write_text(json.dumps(source_info, indent=2))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "config.yaml").write_text(config_text)

    _write_guarded(out, write)
    log(f"imported {source} ({FAMILIES[family]}, {model_cfg.num_params():,} parameters) into {out}; continue "
        f"pretraining with: pretrain train --run.output_dir {out} --resume")
    return out


# ---- command line ----------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump: the CLI prints `error: ...` and exits 2
        raise _usage_error(f"{message}; run `pretrain export --help` for the options")


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
            raise _usage_error("give either RUN or --from-hub, not both")
        extra = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--push-to-hub", args.push_to_hub),
                                          ("--private", args.private), ("--revision", args.revision),
                                          ("--license", args.license)) if value]
        if extra:
            raise _usage_error(f"{', '.join(extra)} only apply to exporting a run, not to --from-hub")
        import_hub(args.from_hub, args.out, overwrite=args.overwrite, objective=args.objective)
        return 0
    if not args.run_dir:
        raise _usage_error("missing the run directory: pretrain export RUN --out DIR (or --from-hub ID --out RUN)")
    if (args.private or args.revision) and not args.push_to_hub:
        raise _usage_error("--private and --revision apply to --push-to-hub ORG/NAME; add it or drop them")
    if args.objective:
        raise _usage_error("--objective applies to --from-hub only")
    export_run(args.run_dir, args.out, args.checkpoint, overwrite=args.overwrite, license=args.license,
               push_to_hub=args.push_to_hub, private=args.private, revision=args.revision)
    return 0


def main(argv=None) -> int:
    """Stand-alone entry (python -m pretrain.export ...): errors as one line, like the pretrain CLI."""
    try:
        return export_main(argv)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2 if getattr(e, "usage", False) or type(e).__name__ == "ConfigError" else 1


if __name__ == "__main__":
    sys.exit(main())
