"""A run -> a Hugging Face folder (and optionally the Hub): `pretrain export RUN --out DIR`.

The folder loads with AutoModelForMaskedLM / AutoModelForCausalLM / AutoModelForSeq2SeqLM and `pipeline` without
custom code: config.json, model.safetensors, generation_config.json (generative models), tokenizer.json +
tokenizer_config.json, README.md (model card) + loss_curve.png + training_config.json. A config that matches no
transformers family is refused before anything is written; the folder is written atomically. A model whose head
predicts no tokens (ELECTRA's discriminator) loads with its own class. An objective's extra models
(Objective.exports: ELECTRA's generator) go into sub-folders with the tokenizer, each loadable on its own.
"""
from __future__ import annotations

import re
from pathlib import Path

from transformers import GenerationConfig

from models.convert import hf_classes, match_family, to_transformers

from ..errors import UserError
from ..train.saved_run import load_run_model, load_run_spec
from .compat import family_tokenizer, save_model, save_tokenizer
from .folder import check_out_dir, usage_error, write_folder
from .hub import check_can_push, find_token_leaks, get_token, push_folder
from .model_card import write_model_card

LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")


def _say(message: str):
    print(message, flush=True)


def resolve_family(model_cfg) -> str:
    """The transformers family that reproduces model_cfg exactly; UserError naming the differing fields otherwise."""
    family, differing = match_family(model_cfg)
    if differing:
        classes = hf_classes()
        raise UserError(f"this model matches no transformers family: fields {', '.join(differing)} differ from the "
                        f"nearest family {family} ({classes[family]}); export supports models trained with the "
                        f"presets {', '.join(classes)} without changing those fields")
    return family


def build_hf_model(model, model_cfg, tokenizer, family: str):
    """Our model as the family's transformers class, its config and generation config completed from the
    tokenizer (special-token ids) and the model (max positions)."""
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
        gen = GenerationConfig.from_model_config(config)
        for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(config, key, None)
            if value is not None:
                setattr(gen, key, value)
        if gen.pad_token_id is None and gen.eos_token_id is not None:
            gen.pad_token_id = gen.eos_token_id
        hf_model.generation_config = gen
    return hf_model


def objective_exports(record, model, model_cfg, tokenizer) -> dict:
    """The objective's extra transformers models (Objective.exports: ELECTRA's generator), built from its own
    parameters as trained; none when the run's config is unknown (an imported model)."""
    if record.config is None:
        return {}
    objective = load_run_spec(record, tokenizer, model_cfg).objective
    return objective.exports(model)


def export_run(run_dir, out, checkpoint: str | None = None, *, overwrite: bool = False, license: str | None = None,
               push_to_hub: str | None = None, private: bool = False, revision: str | None = None,
               log=_say) -> Path:
    """Export a run (final/ or a checkpoint) to a Hugging Face folder `out`; optionally push it. Returns out."""
    run, out = Path(run_dir), Path(out)
    if push_to_hub:
        check_can_push(push_to_hub)
    if license is not None and not LICENSE.match(license):
        raise usage_error(f"invalid --license {license!r}; use a Hub license id such as apache-2.0, mit, other")
    check_out_dir(out, overwrite, protect=run)
    model, model_cfg, tokenizer, record = load_run_model(run, checkpoint)
    family = resolve_family(model_cfg)  # refuse before anything is written
    hf_model = build_hf_model(model, model_cfg, tokenizer, family)
    hf_class = type(hf_model).__name__
    extras = objective_exports(record, model, model_cfg, tokenizer)
    tokenizer.model_max_length = model_cfg.max_seq_len
    exported_tokenizer = family_tokenizer(tokenizer, family, token_types=model_cfg.type_vocab_size > 0)

    def write(tmp: Path):
        save_model(hf_model, tmp, family, model_cfg)
        if getattr(hf_model, "generation_config", None) is not None and model_cfg.arch != "encoder":
            hf_model.generation_config.save_pretrained(str(tmp))
        save_tokenizer(exported_tokenizer, tmp)
        write_model_card(tmp, record, model_cfg, family, hf_class, license=license, repo_id=push_to_hub,
                         tokenizer=exported_tokenizer, name=out.name)
        for name, extra in extras.items():  # e.g. ELECTRA's generator/, loadable on its own with its tokenizer
            save_model(extra, tmp / name)
            save_tokenizer(exported_tokenizer, tmp / name)
            with open(tmp / "README.md", "a") as card:
                card.write(f"\n`{name}/` holds the objective's {type(extra).__name__}, trained with this model; "
                           f"load it with `{type(extra).__name__}.from_pretrained(\"{name}\")` from this folder.\n")
        needed = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"]
        if model_cfg.arch != "encoder":
            needed.append("generation_config.json")
        missing = [name for name in needed if not (tmp / name).is_file()]
        if missing:
            raise UserError(f"export incomplete: {', '.join(missing)} not written; please report this")
        leaks = find_token_leaks(tmp, get_token())
        if leaks:  # never ship a credential
            raise UserError(f"refusing to write {out}: a Hub token appears in {', '.join(Path(p).name for p in leaks)}")

    write_folder(out, write)
    files = sorted(p.name for p in out.iterdir())
    log(f"exported {run} ({record.checkpoint}, step {record.step}) as {hf_class} to {out}: {', '.join(files)}")
    if push_to_hub:
        url = push_folder(out, push_to_hub, private=private, revision=revision,
                          commit_message=f"Upload {hf_class} ({record.checkpoint}, step {record.step})")
        log(f"pushed {out} to {url}{' (private)' if private else ''}")
    return out
