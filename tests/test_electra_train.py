"""ELECTRA end to end with the real trainer (recipes/electra_rtd.py on a tiny model): it trains and logs its
metrics; stopped mid-run and resumed it gives the uninterrupted run's every loss and metric and the same model AND
generator weights (fp32); the export writes the discriminator as ElectraForPreTraining and the generator as
ElectraForMaskedLM in generator/, both with our logits, fill-mask on the generator; the comparison runs it."""
import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train_fixtures import tiny_flags, train_val_rows, write_corpus

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
METRICS = ("loss", "accuracy", "n_predicted", "gen_loss", "disc_loss", "gen_accuracy", "disc_auc",
           "replaced_fraction", "masked_fraction", "grad_norm")


def recipe():
    spec = importlib.util.spec_from_file_location("recipe_electra_rtd", RECIPES / "electra_rtd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEFAULTS


def train(root: Path, corpus: Path, *extra: str) -> str:
    from pretrain.train.main import train_main

    flags = tiny_flags(root, corpus, steps=12, **{"run.save_every": 4, "run.eval_every": 4,
                                                   "run.mixed_precision": "no", "model.dropout": 0.1})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train_main(recipe(), flags + list(extra), prog="electra_rtd")
    return out.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("data"), n_paragraphs=200)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus):
    """The uninterrupted run, on one thread like the tests (a module fixture starts before `one_thread`; thread
    counts change float reduction orders, e.g. of the gradient norm)."""
    root = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        printed = train(root, corpus)
    finally:
        torch.set_num_threads(threads)
    return root / "run", printed


def test_it_trains_and_logs_its_metrics(straight):
    run, printed = straight
    train_rows = [r for r in train_val_rows(run) if r["split"] == "train"]
    assert len(train_rows) == 12 and all(k in train_rows[-1] for k in METRICS)
    first, last = train_rows[0], train_rows[-1]
    assert last["gen_loss"] < first["gen_loss"] and last["loss"] < first["loss"]
    assert abs(sum(r["masked_fraction"] for r in train_rows) / 12 - 0.15) < 0.02  # 3 sigma over 3k tokens
    assert all(r["replaced_fraction"] <= r["masked_fraction"] for r in train_rows)
    val = [r for r in train_val_rows(run) if r["split"] == "val"]
    assert [r["step"] for r in val] == [4, 8, 12] and all(k in val[-1] for k in METRICS if k != "grad_norm")
    assert 0.5 < val[-1]["disc_auc"] <= 1 and val[-1]["gen_loss"] < val[0]["gen_loss"]
    generator = load_file(run / "final" / "objective.safetensors")
    assert "head_bias" in generator and "project.weight" in generator and "tok_emb.weight" not in generator
    assert "no sample" in printed  # the discriminator has no words to show


def test_resume_is_exact_for_model_and_generator(tmp_path, corpus, straight):
    from pretrain.train.main import train_main

    run, _ = straight
    tokenizer = ["--tokenizer.path", str(run / "tokenizer")]
    train(tmp_path, corpus, "--run.stop_at_step", "6", *tokenizer)
    paused = tmp_path / "run"
    assert not (paused / "final").exists() and (paused / "checkpoints" / "step_6" / "model_1.safetensors").is_file()
    with contextlib.redirect_stdout(io.StringIO()):
        train_main(None, ["--run.output_dir", str(paused), "--resume"])
    # the straight run trained its own tokenizer: the same one, since training it is deterministic
    assert (paused / "tokenizer" / "tokenizer.json").read_text() == (run / "tokenizer" / "tokenizer.json").read_text()
    a, b = train_val_rows(run), train_val_rows(paused)
    assert [(r["split"], r["step"]) for r in a] == [(r["split"], r["step"]) for r in b]
    for x, y in zip(a, b):
        assert {k: x[k] for k in METRICS if k in x} == {k: y[k] for k in METRICS if k in y}, (x["split"], x["step"])
    for name in ("model.safetensors", "objective.safetensors"):
        s, p = load_file(run / "final" / name), load_file(paused / "final" / name)
        assert s.keys() == p.keys() and all(torch.equal(s[k], p[k]) for k in s), name


def test_export_discriminator_and_generator(straight, tmp_path):
    import transformers
    from transformers import pipeline

    from pretrain.export.to_hf import export_run
    from pretrain.train.saved_run import load_run_model, load_run_spec

    run, _ = straight
    out = export_run(run, tmp_path / "hf", log=lambda m: None)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ElectraForPreTraining"]
    gen_cfg = json.loads((out / "generator" / "config.json").read_text())
    assert gen_cfg["architectures"] == ["ElectraForMaskedLM"]
    assert (gen_cfg["embedding_size"], gen_cfg["hidden_size"]) == (32, 8)
    assert "objective.safetensors" not in {p.name for p in out.rglob("*")}

    model, cfg, tokenizer, record = load_run_model(run)
    generator = load_run_spec(record, tokenizer, cfg).objective.module
    batch = tokenizer(["the cat sees the river", "a dog finds an open door every morning"], return_tensors="pt",
                      padding=True)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    disc = transformers.ElectraForPreTraining.from_pretrained(out).eval()
    gen = transformers.AutoModelForMaskedLM.from_pretrained(out / "generator").eval()
    assert type(gen).__name__ == "ElectraForMaskedLM" and hasattr(gen.electra, "embeddings_project")
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        d = (disc(**inputs).logits - model.logits(model(**inputs)).squeeze(-1))[real].abs().max().item()
        g = (gen(**inputs).logits - generator(model, **inputs))[real].abs().max().item()
    assert d < 1e-4 and g < 1e-4, (d, g)

    fill = pipeline("fill-mask", model=str(out / "generator"))
    candidates = fill(f"the cat sees the {fill.tokenizer.mask_token}", top_k=3)
    assert len(candidates) == 3 and all({"score", "token_str"} <= set(c) for c in candidates)
    card = (out / "README.md").read_text()
    assert "ElectraForPreTraining.from_pretrained" in card and "pipeline_tag" not in card
    assert "`generator/`" in card


def test_an_exported_discriminator_continues_with_electra(straight, tmp_path):
    import yaml

    from pretrain.export.from_hf import import_hub
    from pretrain.export.to_hf import export_run

    out = export_run(straight[0], tmp_path / "hf", log=lambda m: None)
    run = import_hub(str(out), tmp_path / "again", log=lambda m: None)
    assert yaml.safe_load((run / "config.yaml").read_text())["objective"]["name"] == "electra"


def test_wrong_pairings_refused_before_anything_is_written(tmp_path, corpus):
    from pretrain.cli import main

    for flags, hint in ((["--model.preset", "bert", "--objective.name", "electra"], "model.preset electra"),
                        (["--model.preset", "electra", "--objective.name", "mlm"], "objective electra")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["train", *tiny_flags(tmp_path, corpus, steps=2), *flags])
        assert code == 2 and hint in err.getvalue() and err.getvalue().count("\n") == 1, err.getvalue()
        assert not (tmp_path / "run").exists()


PROPOSED_RUN = {"name": "electra+rtd", "model": {"preset": "electra", "d_model": 128, "n_heads": 4,
                                                   "max_seq_len": 128, "dropout": 0.0, "n_layers": 2, "d_ff": 512},
                "objective": {"name": "electra"}, "optim": {"lr": 2e-3}}


def test_the_comparison_runs_it_and_says_the_generator_answers_the_cloze(tmp_path, corpus):
    from models import ModelConfig, num_params
    from pretrain.compare.runner import compare_main

    sizes = {k: v for k, v in PROPOSED_RUN["model"].items() if k != "preset"}
    bert, electra = (num_params(ModelConfig.preset(p, vocab_size=4096, **sizes)) for p in ("bert", "electra"))
    assert abs(bert - electra) / bert < 0.10  # matched with bert+mlm of the recipe's RUNS
    tiny = {"preset": "electra", "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}
    defaults = {"output_dir": str(tmp_path / "cmp"), "data": {"files": [str(corpus)]},
                "runs": [{"name": "bert+mlm", "model": {**tiny, "preset": "bert"}, "objective": {"name": "mlm"}},
                         {**PROPOSED_RUN, "model": tiny}],
                "tokenizer": {"kind": "bpe", "vocab_size": 400}, "budget": {"max_tokens": 2000},
                "train": {"seq_len": 32, "batch_size": 8, "eval_batches": 2, "warmup_steps": 2},
                "n_evals": 2, "progress": False, "samples": False, "downstream": {"task": None}, "pairs": {"enabled": False},
                "yardstick": {"window": 32, "n_windows": 30, "min_context": 8, "min_right": 4}}
    with contextlib.redirect_stdout(io.StringIO()):
        assert compare_main(["--only", "electra+rtd"], defaults) == 0
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    (electra_run,) = results["runs"]
    assert electra_run["name"] == "electra+rtd"
    assert electra_run["yardstick"]["method"] == "`[MASK]` at the position, answered by the generator"
    assert electra_run["yardstick"]["both"]["n"] > 0
    assert "the cloze scores the generator" in (tmp_path / "cmp" / "report.md").read_text()
