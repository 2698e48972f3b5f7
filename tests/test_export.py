"""Export to the Hugging Face format (issue 6): each family's tiny run exports to its native transformers class,
loads with the Auto classes and pipelines without custom code, gives our logits (fp32, < 1e-4), round-trips its
tokenizer, carries a parsable model card; checkpoints export; bad outputs are refused; --from-hub makes a run.

The run directories are made by the real trainer (`real_run`): a few optimizer steps with the real objective on a
tiny corpus, with a checkpoint at step 2."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

from models import ModelConfig, Transformer
from pretrain.errors import UserError
from train_fixtures import FAMILY_SETUP, family_run

TOL = 1e-4
FAMILIES = ("bert", "gpt2", "llama", "bart", "t5")
SETUP = FAMILY_SETUP
AUTO = {"encoder": "AutoModelForMaskedLM", "decoder": "AutoModelForCausalLM",
        "encoder-decoder": "AutoModelForSeq2SeqLM"}
NATIVE = {"bert": "BertForMaskedLM", "gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
          "bart": "BartForConditionalGeneration", "t5": "T5ForConditionalGeneration"}
SAMPLE = "The quick brown fox jumps over the lazy dog."


# ---- a tiny corpus and tokenizers ------------------------------------------------------------------------------
def corpus() -> list[str]:
    rng = random.Random(0)
    words = ("the quick brown fox jumps over lazy dog a model learns from text every day small data is "
             "enough for tests of export and import with tokens words sentences").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + "." for _ in range(120)]


def _save_weights(model, path: Path):
    from safetensors.torch import save_model

    save_model(model, str(path), metadata={"format": "pt"})


def real_run(root: Path, family: str, steps: int = 3) -> Path:
    """A real `pretrain train` run of a few steps (checkpoints at step 2 and the last step), quiet."""
    text = root / "corpus.txt"
    if not text.exists():
        text.write_text("\n\n".join(corpus() * 3))
    extra = {"--model.n_kv_heads": 1} if family == "llama" else {}  # grouped-query attention: num_key_value_heads
    return family_run(root / f"run_{family}", family, text, root / "cache", steps, **{
        "--tokenizer.max_documents": 500, "--run.mixed_precision": "no", "--run.peak_flops": "1e12", **extra})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run per family, made by the real trainer."""
    root = tmp_path_factory.mktemp("runs")
    return {family: real_run(root, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    from pretrain.export.to_hf import export_run

    root = tmp_path_factory.mktemp("exported")
    return {family: export_run(run, root / family, license="apache-2.0", log=lambda m: None)
            for family, run in runs.items()}


def inputs(tokenizer, cfg, texts=("the quick brown fox", "a lazy dog learns every day from text")):
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if cfg.arch == "encoder-decoder":
        dec = tokenizer(["fox jumps", "small data is enough"], return_tensors="pt", padding=True)
        start = torch.full((2, 1), cfg.decoder_start_token_id)
        out["decoder_input_ids"] = torch.cat([start, dec["input_ids"]], 1)
        out["decoder_attention_mask"] = torch.cat([torch.ones(2, 1, dtype=torch.long), dec["attention_mask"]], 1)
    return out


# ---- the folder loads as the native class and computes our logits ---------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_export_loads_with_auto_class_and_matches_logits(family, exported, runs):
    import transformers

    from pretrain.train.saved_run import load_run_model

    out = exported[family]
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "loss_curve.png"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    model, cfg, tokenizer, _ = load_run_model(runs[family])
    assert ("generation_config.json" in files) == (cfg.arch != "encoder")

    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["architectures"] == [NATIVE[family]]
    assert hf_cfg["pad_token_id"] == tokenizer.pad_token_id
    if cfg.arch != "encoder":
        assert hf_cfg["eos_token_id"] == tokenizer.eos_token_id
        gen = json.loads((out / "generation_config.json").read_text())
        assert gen["eos_token_id"] == tokenizer.eos_token_id and gen["pad_token_id"] == tokenizer.pad_token_id
    if cfg.arch == "encoder-decoder":
        assert hf_cfg["decoder_start_token_id"] == cfg.decoder_start_token_id
        assert gen["decoder_start_token_id"] == cfg.decoder_start_token_id
    positions = {"bert": "max_position_embeddings", "gpt2": "n_positions", "llama": "max_position_embeddings",
                 "bart": "max_position_embeddings", "t5": "n_positions"}[family]
    assert hf_cfg[positions] == cfg.max_seq_len

    hf_model = getattr(transformers, AUTO[cfg.arch]).from_pretrained(out)
    assert type(hf_model).__name__ == NATIVE[family]
    hf_model.eval()
    batch = inputs(tokenizer, cfg)
    with torch.no_grad():
        ours = model.logits(model(**batch))
        theirs = hf_model(**batch).logits
    mask = (batch.get("decoder_attention_mask", batch["attention_mask"]) == 1)
    diff = (ours - theirs)[mask].abs().max().item()
    assert diff < TOL, f"{family}: max |logits diff| {diff}"


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_runs_on_exported_folder(family, exported, runs):
    import transformers
    from transformers import pipeline

    out = exported[family]
    arch = ModelConfig.from_dict(json.loads((runs[family] / "final" / "model_config.json").read_text())).arch
    if arch == "encoder":
        fill = pipeline("fill-mask", model=str(out))
        candidates = fill(f"the quick {fill.tokenizer.mask_token} fox", top_k=3)
        assert len(candidates) == 3 and all({"score", "token", "token_str"} <= set(c) for c in candidates)
    elif arch == "decoder":
        generate = pipeline("text-generation", model=str(out))
        result = generate("the quick", max_new_tokens=5, do_sample=False)
        assert isinstance(result[0]["generated_text"], str) and result[0]["generated_text"].startswith("the quick")
    else:
        from transformers.pipelines import SUPPORTED_TASKS

        if "text2text-generation" in SUPPORTED_TASKS:  # removed in transformers 5: generate is what it ran
            text = pipeline("text2text-generation", model=str(out))("the quick brown", max_new_tokens=5)
            assert isinstance(text[0]["generated_text"], str)
        tokenizer = transformers.AutoTokenizer.from_pretrained(out)
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out)
        ids = model.generate(**tokenizer("the quick brown", return_tensors="pt"), max_new_tokens=5, do_sample=False)
        assert ids.shape[1] > 1 and int(ids[0, 0]) == model.config.decoder_start_token_id
        assert isinstance(tokenizer.decode(ids[0], skip_special_tokens=True), str)


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_round_trips(family, exported, runs):
    from transformers import AutoTokenizer

    from pretrain.data.tokenizer import load_tokenizer

    ours = load_tokenizer(str(runs[family] / "tokenizer"))
    theirs = AutoTokenizer.from_pretrained(exported[family])
    for text in (SAMPLE, "a model learns from text every day"):
        # issue 29: decoders encode as their family (GPT-2 adds nothing, Llama only BOS); the others as trained
        bare = ours(text, add_special_tokens=False)["input_ids"]
        expected = {"gpt2": bare, "llama": [ours.bos_token_id] + bare}.get(family, ours(text)["input_ids"])
        assert theirs(text)["input_ids"] == expected
    assert theirs.all_special_tokens == ours.all_special_tokens
    for role in ("pad_token", "eos_token", "bos_token", "mask_token", "unk_token"):
        assert getattr(theirs, role) == getattr(ours, role)
    assert len(theirs) == len(ours)
    assert theirs.model_max_length == 64


@pytest.mark.parametrize("family", ["bert", "gpt2", "t5"])
def test_model_card_metadata(family, exported):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exported[family] / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == {"bert": "fill-mask", "gpt2": "text-generation", "t5": "text-generation"}[family]
    assert meta["license"] == "apache-2.0"
    assert family in meta["tags"] and "unified-pretrain" in meta["tags"]
    assert "datasets" not in meta  # the built-in corpus is not a Hub dataset
    text = card.text
    for needle in ("## Architecture", "## Objective and training settings", "tokens seen", "FLOPs",
                   "## Final validation metrics", "![loss curve](loss_curve.png)", "## Usage", NATIVE[family]):
        assert needle in text, needle
    assert (exported[family] / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("family", FAMILIES)
def test_model_card_usage_runs_and_tag_is_a_task(family, exported, capsys):
    """The card's pipeline tag is a task of transformers' pipelines, and its usage example runs as printed on the
    export (offline): T5 with a sentinel it answers, decoders continuing the prompt."""
    import re

    from huggingface_hub import ModelCard
    from transformers.pipelines import SUPPORTED_TASKS

    card = ModelCard.load(exported[family] / "README.md")
    assert card.data.to_dict()["pipeline_tag"] in SUPPORTED_TASKS
    code = re.search(r"## Usage\s+```python\n(.*?)```", card.text, re.S).group(1)
    assert "path/to/this/folder" in code
    exec(compile(code.replace("path/to/this/folder", str(exported[family])), "card", "exec"), {})
    printed = capsys.readouterr().out
    if family == "t5":
        assert "<extra_id_0>" in code and printed.startswith("<pad>")  # 3 steps: what follows is noise
    if family in ("gpt2", "llama"):
        assert printed.startswith("Once upon a time")
    text = card.text
    assert "## License" in text and "4.57.6" in text and "5.25.0" in text
    if family == "t5":
        assert "100 sentinels `<extra_id_0>` … `<extra_id_99>`" in text


def test_model_card_datasets_and_no_license(tmp_path):
    from huggingface_hub import ModelCard

    from pretrain.export.model_card import write_model_card
    from pretrain.train.config import parse_config
    from pretrain.train.saved_run import RunRecord

    cfg = ModelConfig.preset("gpt2", d_model=32, n_layers=1, n_heads=2, d_ff=64, vocab_size=50, max_seq_len=32)
    train_cfg = parse_config(["--model.preset", "gpt2", "--objective.name", "clm", "--data.hub_dataset", "wikitext",
                              "--data.files", "a.txt", "--run.seq_len", "16"])
    record = RunRecord(run_dir=tmp_path, weights=tmp_path, checkpoint="final", config=train_cfg, tokens=1000)
    write_model_card(tmp_path, record, cfg, "gpt2", "GPT2LMHeadModel")
    card = ModelCard.load(tmp_path / "README.md")
    meta = card.data.to_dict()
    assert meta["datasets"] == ["wikitext"]  # a Hub dataset; local files are not
    assert meta["license"] == "apache-2.0"  # the project's when --license is not given (issue 29)
    assert "causal-lm" in meta["tags"] and "causal language modeling (GPT)" in card.text  # from the objective
    assert "Hub dataset `wikitext`" in card.text and "local files `a.txt`" in card.text
    assert not (tmp_path / "loss_curve.png").exists()


# ---- checkpoints, refusals, atomicity --------------------------------------------------------------------------
def test_export_checkpoint_step(runs, tmp_path):
    import transformers

    from pretrain.export.command import export_main
    from pretrain.train.saved_run import load_run_model

    run = runs["gpt2"]
    assert export_main([str(run), "--out", str(tmp_path / "ckpt"), "--checkpoint", "step_2"]) == 0
    model, cfg, tokenizer, record = load_run_model(run, "step_2")
    assert record.step == 2 and record.checkpoint == "step_2"
    assert all(r["step"] <= 2 for r in record.metrics)
    final_model, *_ = load_run_model(run)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    batch = inputs(tokenizer, cfg)
    with torch.no_grad():
        ours, theirs = model.logits(model(**batch)), hf(**batch).logits
        final = final_model.logits(final_model(**batch))
    mask = batch["attention_mask"] == 1
    assert (ours - theirs)[mask].abs().max() < TOL
    assert (final - theirs)[mask].abs().max() > 1e-3  # really the step-2 weights, not the final ones
    assert "| steps | 2 |" in (tmp_path / "ckpt" / "README.md").read_text()

    with pytest.raises(UserError, match="step_7.*not found.*step_2"):
        export_main([str(run), "--out", str(tmp_path / "x"), "--checkpoint", "step_7"])
    assert not (tmp_path / "x").exists()


def test_incomplete_checkpoint_refused(runs, tmp_path):
    from pretrain.export.to_hf import export_run

    half = runs["bert"] / "checkpoints" / "step_9"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    try:
        with pytest.raises(UserError, match="incomplete"):
            export_run(runs["bert"], tmp_path / "out", "step_9", log=lambda m: None)
    finally:
        import shutil
        shutil.rmtree(half)
    assert not (tmp_path / "out").exists()


def test_unfinished_run_points_to_checkpoints(runs, tmp_path):
    import shutil

    from pretrain.export.to_hf import export_run

    run = tmp_path / "unfinished"
    shutil.copytree(runs["gpt2"], run)
    shutil.rmtree(run / "final")  # killed before the end: only checkpoints, no model_config.json beside them
    with pytest.raises(UserError, match=r"did not finish.*--checkpoint step_\d"):
        export_run(run, tmp_path / "out", log=lambda m: None)
    export_run(run, tmp_path / "out", "2", log=lambda m: None)  # a bare step number works too
    assert (tmp_path / "out" / "model.safetensors").is_file()
    from pretrain.train.saved_run import load_run_model

    _, cfg, _, _ = load_run_model(run, "step_2")
    assert cfg.to_dict() == json.loads((runs["gpt2"] / "final" / "model_config.json").read_text())


def test_cli_dispatch(runs, tmp_path, capsys):
    from pretrain.cli import main

    assert main(["export", str(runs["bert"]), "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert main(["export", str(runs["bert"]), "--out", str(tmp_path / "o")]) == 2  # not empty: usage error
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "--overwrite" in err


def test_unsupported_family_refused_before_writing(tmp_path, runs):
    import shutil

    from pretrain.export.command import export_main

    run = tmp_path / "rotary_bert"
    shutil.copytree(runs["bert"], run)
    cfg = ModelConfig.from_dict(json.loads((run / "final" / "model_config.json").read_text()))
    cfg.position = "rotary"  # a BERT-shaped encoder with rotary positions: no transformers class has that
    model = Transformer(ModelConfig.from_dict(cfg.to_dict()))
    _save_weights(model, run / "final" / "model.safetensors")
    (run / "final" / "model_config.json").write_text(json.dumps(cfg.to_dict()))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UserError) as err:
        export_main([str(run), "--out", str(tmp_path / "out")])
    message = str(err.value)
    assert "position" in message and "nearest family bert" in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp folder left


def test_out_dir_refusals(runs, tmp_path):
    from pretrain.export.command import export_main

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        export_main([str(runs["bert"]), "--out", str(full)])
    assert [p.name for p in full.iterdir()] == ["keep.txt"]

    assert export_main([str(runs["bert"]), "--out", str(full), "--overwrite"]) == 0
    assert not (full / "keep.txt").exists() and (full / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp / backup folders left

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        export_main([str(runs["bert"]), "--out", str(blocker / "sub")])
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(UserError, match="not writable"):
                export_main([str(runs["bert"]), "--out", str(locked / "out")])
        finally:
            locked.chmod(0o700)

    with pytest.raises(UserError, match="run directory"):
        export_main([str(runs["bert"]), "--out", str(runs["bert"]), "--overwrite"])
    with pytest.raises(UserError, match="not a run directory|does not exist"):
        export_main([str(tmp_path / "nope"), "--out", str(tmp_path / "o2")])


def test_failure_mid_write_leaves_nothing(runs, tmp_path, monkeypatch):
    import pretrain.export.model_card as model_card
    from pretrain.export.to_hf import export_run

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous export")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_card, "plot_loss", boom)
    with pytest.raises(UserError, match="No space left"):
        export_run(runs["gpt2"], out, overwrite=True, log=lambda m: None)
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # the previous folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_usage_errors_are_one_line(runs, tmp_path):
    from pretrain.export.command import export_main

    for argv, pattern in (([], "--out"), ([str(runs["bert"])], "--out"),
                          (["--out", str(tmp_path / "o")], "run directory"),
                          ([str(runs["bert"]), "--out", str(tmp_path / "o"), "--private"], "--push-to-hub"),
                          ([str(runs["bert"]), "--out", str(tmp_path / "o"), "--push-to-hub", "no-slash"], "ORG/NAME"),
                          ([str(runs["bert"]), "--out", str(tmp_path / "o"), "--license", "Not A License"], "license"),
                          ([str(runs["bert"]), "--out", str(tmp_path / "o"), "--bogus"], "unrecognized"),
                          (["--from-hub", "x", str(runs["bert"]), "--out", str(tmp_path / "o")], "not both")):
        with pytest.raises(UserError, match=pattern) as err:
            export_main(argv)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "o").exists()


# ---- the reverse: a transformers folder -> a run directory -----------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "t5"])
def test_from_hub_local_folder_makes_a_run(family, exported, runs, tmp_path):
    import yaml

    from pretrain.export.command import export_main
    from pretrain.export.to_hf import export_run
    from pretrain.train.build import init_from_pretrained
    from pretrain.train.saved_run import load_run_model

    run = tmp_path / "continued"
    assert export_main(["--from-hub", str(exported[family]), "--out", str(run)]) == 0
    assert {"config.yaml", "model_config.json", "tokenizer", "init"} <= {p.name for p in run.iterdir()}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["preset"] == family
    assert config["model"]["init_from"] == str((run / "init").resolve())
    assert config["objective"]["name"] == SETUP[family][1]
    assert config["run"]["output_dir"] == str(run)

    model, cfg, tokenizer, _ = load_run_model(run)  # the imported run reads like any other
    original, original_cfg, original_tok, _ = load_run_model(runs[family])
    assert cfg.to_dict() == {**original_cfg.to_dict(), "dropout": cfg.dropout,
                             "attention_dropout": cfg.attention_dropout}
    assert tokenizer(SAMPLE)["input_ids"] == original_tok(SAMPLE)["input_ids"]
    batch = inputs(tokenizer, cfg)
    with torch.no_grad():
        assert torch.allclose(model.logits(model(**batch)), original.logits(original(**batch)), atol=TOL)

    # what the trainer does with that config.yaml: preset + the non-None model fields, ids from the tokenizer
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    derived = {k: v for k, v in (("pad_token_id", tokenizer.pad_token_id), ("eos_token_id", tokenizer.eos_token_id),
                                 ("bos_token_id", bos)) if v is not None}
    fields = {k: v for k, v in config["model"].items() if k not in ("preset", "init_from") and v is not None}
    resolved = ModelConfig.preset(family, **{**derived, **fields})
    assert resolved.to_dict() == {**cfg.to_dict(), **{k: getattr(resolved, k) for k in derived}}
    fresh = Transformer(resolved)
    init_from_pretrained(fresh, config["model"]["init_from"])
    for (name, a), b in zip(fresh.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    wrong = Transformer(ModelConfig.from_dict({**cfg.to_dict(), "d_ff": cfg.d_ff * 2}))
    with pytest.raises(UserError, match="d_ff"):
        init_from_pretrained(wrong, run / "init")

    again = export_run(run, tmp_path / "again", log=lambda m: None)  # and exports again
    assert "Imported from" in (again / "README.md").read_text()

    with pytest.raises(UserError, match="not empty"):
        export_main(["--from-hub", str(exported[family]), "--out", str(run)])


def test_pickled_or_corrupted_weights_refused(runs, exported, tmp_path):
    """Weights load from safetensors only: a pickle with a payload is never unpickled, garbage is one error."""
    import pickle
    import shutil

    from pretrain.export.command import export_main

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    hf = tmp_path / "pickled_hf"
    hf.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(exported["gpt2"] / name, hf / name)
    (hf / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UserError, match="cannot load"):
        export_main(["--from-hub", str(hf), "--out", str(tmp_path / "r")])
    assert not marker.exists() and not (tmp_path / "r").exists()

    run = tmp_path / "corrupt"
    shutil.copytree(runs["gpt2"], run)
    (run / "final" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="corrupted") as err:
        export_main([str(run), "--out", str(tmp_path / "o")])
    assert "\n" not in str(err.value) and not (tmp_path / "o").exists()


def test_from_hub_errors(tmp_path, monkeypatch):
    from pretrain.export.command import export_main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot load 'someone/missing-model'") as err:
        export_main(["--from-hub", "someone/missing-model", "--out", str(tmp_path / "r")])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="cannot load"):
        export_main(["--from-hub", str(tmp_path), "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
