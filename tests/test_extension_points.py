"""The two extension points, each one file registered at runtime and touching no other module:
- a new objective (tests/toy_objective.py, with parameters of its own) trains, resumes exactly (its own parameters
  too), evaluates with `pretrain eval`, titles and tags the exported model card, and answers the comparison's
  yardstick;
- a new model family (tests/toy_family.py) trains with its own preset and initialization, and export refuses it
  as its file says (no transformers class)."""
import contextlib
import importlib
import io
import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from models import ModelConfig, Transformer, family_names
from models.family import FAMILIES
from objectives import OBJECTIVES
from pretrain.errors import UserError
from train_fixtures import tiny_flags, train_val_rows, write_corpus

pytestmark = pytest.mark.usefixtures("one_thread", "extensions")


@pytest.fixture(scope="module")
def extensions():
    """Import (= register) the toy objective and family for this module's tests only."""
    importlib.import_module("toy_objective")
    importlib.import_module("toy_family")
    yield
    OBJECTIVES.pop("toy-denoise")
    FAMILIES.pop("toy-encoder")
    sys.modules.pop("toy_objective")
    sys.modules.pop("toy_family")


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def train(tmp_path, corpus, steps, **extra):
    from pretrain.train.main import train_main

    return quiet(train_main, None, tiny_flags(tmp_path, corpus, steps=steps,
                                              **{"run.sample": "false", "run.save_every": 4, "run.eval_every": 4,
                                                 **extra}))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("data"), n_paragraphs=200)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, corpus, extensions):
    root = tmp_path_factory.mktemp("toy")
    train(root, corpus, 12, **{"objective.name": "toy-denoise", "objective.options": '{"rate": 0.3}'})
    return root / "run"


def test_the_objective_trains_with_its_own_parameters(toy_run):
    assert "toy-denoise" in OBJECTIVES
    train_rows = [r for r in train_val_rows(toy_run) if r["split"] == "train"]
    assert len(train_rows) == 12 and train_rows[-1]["loss"] < train_rows[0]["loss"]
    head = load_file(toy_run / "final" / "objective.safetensors")
    assert set(head) == {"weight", "bias"}
    assert (toy_run / "checkpoints" / "step_12" / "model_1.safetensors").is_file()  # checkpointed with the model
    with torch.random.fork_rng():  # the head the objective started from, as the run built it (seeded)
        from pretrain.train.build import run_spec
        from pretrain.train.saved_run import load_run_model

        _, model_cfg, tokenizer, record = load_run_model(toy_run)
        fresh = run_spec(record.config, tokenizer, model_cfg).objective.module
    assert not torch.equal(fresh.weight, head["weight"])  # the trainer optimized it
    assert torch.equal(run_spec(record.config, tokenizer, model_cfg).objective.module.weight, fresh.weight)


def test_resume_restores_the_objectives_parameters_exactly(tmp_path, corpus, toy_run):
    """Stopped at step 4 and resumed: the same loss curve, model and head as the uninterrupted run."""
    from pretrain.train.main import train_main

    flags = {"objective.name": "toy-denoise", "objective.options": '{"rate": 0.3}',
             "tokenizer.path": str(toy_run / "tokenizer")}
    straight_dir, paused_dir = tmp_path / "straight", tmp_path / "paused"
    train(straight_dir, corpus, 12, **flags)
    train(paused_dir, corpus, 12, **flags, **{"run.stop_at_step": 4})
    assert not (paused_dir / "run" / "final").exists()
    quiet(train_main, None, ["--run.output_dir", str(paused_dir / "run"), "--resume"])
    straight, paused = straight_dir / "run", paused_dir / "run"
    assert [(r["split"], r["step"], r["loss"]) for r in train_val_rows(straight)] == \
        [(r["split"], r["step"], r["loss"]) for r in train_val_rows(paused)]
    for name in ("model.safetensors", "objective.safetensors"):
        a, b = load_file(straight / "final" / name), load_file(paused / "final" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_pretrain_eval_asks_the_objective(toy_run):
    from pretrain.train.eval_run import evaluate_run

    metrics = quiet(evaluate_run, str(toy_run))
    last_val = [r for r in train_val_rows(toy_run) if r["split"] == "val"][-1]
    assert metrics["loss"] == pytest.approx(last_val["loss"], rel=1e-5)  # through the trained head, from final/
    assert "perplexity" not in metrics  # the objective says it means nothing here


def test_the_model_card_takes_the_objectives_title_and_tag(toy_run, tmp_path):
    from huggingface_hub import ModelCard

    from pretrain.export.to_hf import export_run

    out = export_run(toy_run, tmp_path / "hf", log=lambda m: None)
    card = ModelCard.load(out / "README.md")
    assert "toy-denoising" in card.data.to_dict()["tags"]
    assert "random-token denoising (a toy)" in card.text
    assert "objective.safetensors" not in {p.name for p in out.iterdir()}  # its own head is not exported


def test_the_comparison_yardstick_asks_the_objective(tmp_path, corpus):
    from pretrain.compare.runner import compare_main

    model = {"preset": "bert", "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}
    defaults = {"output_dir": str(tmp_path / "cmp"), "data": {"files": [str(corpus)]},
                "runs": [{"name": "bert+toy", "model": model, "objective": {"name": "toy-denoise"}},
                         {"name": "bert+mlm", "model": model, "objective": {"name": "mlm"}}],
                "tokenizer": {"kind": "bpe", "vocab_size": 400}, "budget": {"max_tokens": 2000},
                "train": {"seq_len": 32, "batch_size": 8, "eval_batches": 2, "warmup_steps": 2},
                "n_evals": 2, "progress": False, "samples": False, "max_param_spread": 0.2,
                "downstream": {"task": None}, "pairs": {"enabled": False},
                "yardstick": {"window": 32, "n_windows": 30, "min_context": 8, "min_right": 4}}
    assert quiet(compare_main, [], defaults) == 0
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    toy = next(r for r in results["runs"] if r["name"] == "bert+toy")
    assert toy["yardstick"]["method"] == "word replaced by `<pad>`, read through the toy head"
    assert toy["yardstick"]["both"]["n"] > 0 and 0 <= toy["yardstick"]["both"]["accuracy"] <= 1
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "random-token denoising (a toy)" in report and "never on `<pad>` holes" in report
    assert "never on <code>&lt;pad&gt;</code> holes" in (tmp_path / "cmp" / "report.html").read_text()


def test_a_new_family_trains_and_export_refuses_it_as_its_file_says(tmp_path, corpus):
    from pretrain.export.to_hf import export_run

    assert "toy-encoder" in family_names("encoder")
    cfg = ModelConfig.preset("toy-encoder", d_model=32, n_layers=1, n_heads=2, d_ff=64, vocab_size=50, max_seq_len=32)
    weights = Transformer(cfg).encoder.layers[0].ff.up.weight
    assert weights.abs().max() <= 0.01  # the family's own initialization
    train(tmp_path, corpus, 4, **{"model.preset": "toy-encoder"})  # default objective: mlm
    run = tmp_path / "run"
    saved = json.loads((run / "final" / "model_config.json").read_text())
    assert saved["init"] == "toy-encoder" and saved["position"] == "rotary" and saved["norm"] == "rmsnorm"
    with pytest.raises(UserError, match="matches no transformers family") as err:
        export_run(run, tmp_path / "hf", log=lambda m: None)
    assert "toy-encoder" not in str(err.value).split("presets")[-1]  # not offered as an export target
    assert not (tmp_path / "hf").exists()
