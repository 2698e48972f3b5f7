"""End to end, per recipe, on a tiny model and a tiny corpus written into tmp_path: the loss goes down, checkpoints
and the final model are written, metrics.jsonl holds every step, the recipe prints its summary and a sample."""
import importlib.util
import json
from pathlib import Path

import pytest

from pretrain.train.eval_run import evaluate_run
from pretrain.train.main import train_main as main
from pretrain.train.run_dir import RunDir
from train_fixtures import tiny_flags, write_corpus

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"



def recipe_defaults(name: str) -> dict:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEFAULTS


@pytest.mark.parametrize("recipe, sample_word", [("bert_mlm", "fill-mask"), ("modernbert_mlm", "fill-mask"),
                                                 ("gpt_clm", "continuation"),
                                                 ("bart_infill", "reconstruction"), ("t5_span", "reconstruction"),
                                                 ("ul2", "reconstruction"), ("gpt_bert_hybrid", "continuation")])
def test_recipe_trains_end_to_end(tmp_path, capsys, recipe, sample_word):
    corpus = write_corpus(tmp_path / "data")
    result = main(recipe_defaults(recipe), tiny_flags(tmp_path, corpus, steps=30), prog=recipe)
    run = tmp_path / "run"
    out = capsys.readouterr().out

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert [r["step"] for r in val] == [10, 20, 30]
    first, last = sum(r["loss"] for r in train[:5]) / 5, sum(r["loss"] for r in train[-5:]) / 5
    assert last < first - 0.3, (first, last)
    assert val[-1]["loss"] < val[0]["loss"]
    assert all(k in train[-1] for k in ("lr", "accuracy", "n_predicted", "tokens_per_s", "mfu", "elapsed"))

    assert [s for s, _ in RunDir(run).complete_checkpoints()] == [20, 30]
    for name in ("model.safetensors", "model_config.json", "tokenizer.json", "config.yaml", "metrics.json"):
        assert (run / "final" / name).is_file(), name
    assert (run / "config.yaml").is_file() and (run / "tokenizer" / "tokenizer.json").is_file()
    assert result["val"]["loss"] == pytest.approx(val[-1]["loss"])

    assert str(run) in out and "validation: loss" in out and sample_word in out
    lines = out.splitlines()  # the quiet start: the changed values, one line per section, not the whole tree
    header = lines[:[i for i, ln in enumerate(lines) if ln.startswith("full config: ")][0] + 1]
    assert len(header) <= 8 and header[1] == "config: the recipe's defaults, except", header
    assert header[-1].startswith(f"full config: {run / 'config.yaml'}") and "--- config ---" not in out
    if recipe == "bert_mlm":  # `pretrain eval RUN` recomputes the same validation metrics from final/
        again = evaluate_run(str(run), batches=2)
        assert again["loss"] == pytest.approx(val[-1]["loss"], rel=1e-5)
