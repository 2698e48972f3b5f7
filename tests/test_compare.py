"""End to end: a tiny comparison of three objectives (encoder, decoder, encoder-decoder) writes the report files,
the table, valid PNGs and results.json; an interrupted run resumes and finished runs are skipped on the next
invocation; the attention CLI draws a run; the yardstick gives every model the same positions."""
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import write_corpus, write_word_task  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

RUNS = [
    {"name": "bert+mlm", "model": {"preset": "bert", "d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64},
     "objective": {"name": "mlm"}, "optim": {"lr": 3e-3}},
    {"name": "gpt2+clm", "model": {"preset": "gpt2", "d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64},
     "objective": {"name": "clm"}, "optim": {"lr": 3e-3}},
    {"name": "t5+span", "model": {"preset": "t5", "d_model": 32, "n_layers": 1, "n_heads": 2, "head_dim": 16,
                                  "d_ff": 40, "tie_embeddings": True},
     "objective": {"name": "span"}, "optim": {"lr": 3e-3}},
]


def tiny_defaults(tmp: Path, corpus: Path) -> dict:
    task = write_word_task(tmp / "word_task.csv", 120, 0)
    return {"output_dir": str(tmp / "cmp"), "runs": RUNS, "data": {"files": [str(corpus)]},
            "downstream": {"task": str(task), "seeds": 2,
                           "recipe": {"epochs": 2, "lr": 3e-3, "batch_size": 16, "max_length": 32}},
            "tokenizer": {"kind": "bpe", "vocab_size": 400}, "budget": {"max_tokens": 4000},
            "train": {"seq_len": 32, "batch_size": 8, "eval_batches": 2, "warmup_steps": 3},
            "n_evals": 3, "progress": False,
            "yardstick": {"window": 32, "n_windows": 40, "min_context": 8, "min_right": 4},
            "pairs": {"corpus": 40, "grammar": 10}}


def check_png(path: Path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """First invocation: gpt2+clm stops half way (as if interrupted); second: it resumes, the others are skipped."""
    import contextlib
    import copy
    import io

    from pretrain.compare.runner import compare_main

    tmp = tmp_path_factory.mktemp("compare")
    corpus = write_corpus(tmp / "data", n_paragraphs=250)
    defaults = tiny_defaults(tmp, corpus)
    interrupted = copy.deepcopy(defaults)
    interrupted["runs"][1]["run"] = {"stop_at_step": 6}
    first = io.StringIO()
    with contextlib.redirect_stdout(first):
        assert compare_main([], {**interrupted, "samples": False}) == 0
    out = tmp / "cmp"
    partial = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in partial["runs"] if r.get("missing")] == ["gpt2+clm"]
    assert not (out / "runs" / "gpt2_clm" / "final").exists()
    second = io.StringIO()
    with contextlib.redirect_stdout(second):
        assert compare_main([], defaults) == 0
    return out, defaults, first.getvalue(), second.getvalue()


def test_progress_and_resume(comparison):
    out, _, first, second = comparison
    assert "[run 1/3] bert+mlm: training" in first and "[run 3/3] t5+span: training" in first
    assert "[run 2/3] gpt2+clm: resuming" in second
    assert second.count("finished already") == 2
    assert "resumed from" in second
    assert "Not finished" not in (out / "report.md").read_text()


def test_report_files_table_plots_results(comparison):
    out = comparison[0]
    for name in ("report.md", "report.html", "results.json"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "| run | architecture | parameters |" in md
    for run in RUNS:
        assert f"| {run['name']} |" in md
    assert "Not comparable" in md and "Whole-word cloze" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 + len(RUNS)  # 3 plots + one attention map per run
    assert "<table>" in html and "src='plots/" not in html and 'src="plots/' not in html  # self-contained
    assert "<code>&lt;extra_id_0&gt;</code>, first target token" in html  # token names shown, not eaten as tags
    for png in ("val_loss_vs_tokens.png", "val_loss_vs_time.png", "yardstick.png"):
        check_png(out / "plots" / png)
    results = json.loads((out / "results.json").read_text())
    by_name = {r["name"]: r for r in results["runs"]}
    assert set(by_name) == {r["name"] for r in RUNS}
    counts = [r["parameters"] for r in by_name.values()]
    assert (max(counts) - min(counts)) / min(counts) <= 0.10
    for r in by_name.values():
        assert not r.get("missing")
        assert r["tokens"] >= 4000 and r["val_loss"] > 0 and r["flops"] > 0 and r["val_curve"]
        for variant in ("both", "left"):
            assert 0.0 <= r["yardstick"][variant]["accuracy"] <= 1.0
        assert r["yardstick"]["both"]["n"] == by_name["bert+mlm"]["yardstick"]["both"]["n"] > 0
        check_png(Path(r["attention_png"]))
        assert r["sample"] and "failed" not in r["sample"]


def test_second_invocation_skips_finished_runs(comparison, capsys):
    from pretrain.compare.runner import compare_main

    out, defaults = comparison[:2]
    before = {p: p.stat().st_mtime for p in (out / "runs").glob("*/final/model.safetensors")}
    assert compare_main([], {**defaults, "samples": False}) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished already") == len(RUNS)
    assert "[run 1/3] bert+mlm" in printed
    after = {p: p.stat().st_mtime for p in (out / "runs").glob("*/final/model.safetensors")}
    assert before == after


def test_downstream_section(comparison):
    """Every run probed and fine-tuned on the task beside its random-init baseline; the report says what differs."""
    out, _, first, second = comparison
    results = json.loads((out / "results.json").read_text())
    down = results["downstream"]
    # the encoder-decoder is read two ways: transformers' decoder-pooled classifier and its encoder's mean state
    assert [(row["name"], row["pooling"]) for row in down["rows"]] == [
        ("bert+mlm", "native"), ("gpt2+clm", "native"), ("t5+span", "native"), ("t5+span", "encoder")]
    assert [row["label"] for row in down["rows"] if row["headline"]] == ["bert+mlm", "gpt2+clm",
                                                                         "t5+span (encoder-pooled)"]
    assert 0 <= down["bag_of_words"]["accuracy"] <= 1
    for row in down["rows"]:
        for cell in ("probe/pretrained", "probe/random_init", "finetune/pretrained", "finetune/random_init"):
            s = row["cells"][cell]
            assert 0 <= s["min"] <= s["median"] <= s["max"] <= 1
        assert row["cells"]["finetune/random_init"]["n"] == 2 and row["cells"]["probe/pretrained"]["n"] == 1
        per_run = json.loads((out / "runs" / row["name"].replace("+", "_") / "finetune" / "word_task" /
                              "results.json").read_text())
        mode = "finetune" if row["pooling"] == "native" else "finetune_encoder"
        assert per_run[mode]["pretrained"]["spread"]["test"]["accuracy"]["median"] == \
            row["cells"]["finetune/pretrained"]["median"]
    assert len(down["verdicts"]) == 2 * (len(RUNS) + 1) and len(down["pairs"]) == 3
    assert all(("more than twice" in v) or ("not more than twice" in v) for v in down["verdicts"])
    md = (out / "report.md").read_text()
    assert "## Downstream" in md and "fine-tuned, random init" in md and "word_task" in md
    assert "| bag of words (reference, no pretraining) |" in md and "**Ranking, fine-tuned**" in md
    assert "1 pretraining seed; spread across 2 fine-tuning seeds only" in md
    html = (out / "report.html").read_text()
    blocks = md.split("\n\n")
    assert html.count("<ul>") == sum(b.startswith("- ") for b in blocks) > 3
    assert html.count("<table>") == sum(b.startswith("| ") for b in blocks) >= 3
    check_png(out / "plots" / "downstream.png")
    assert second.count("done already") >= 2  # the runs finished in the first invocation keep their results


def test_bad_downstream_task_refused_before_training(tmp_path):
    from pretrain.compare.runner import compare_main
    from pretrain.errors import UserError

    corpus = write_corpus(tmp_path / "data", n_paragraphs=20)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,y\na,1\nb,2\n")
    defaults = {**tiny_defaults(tmp_path, corpus), "downstream": {"task": str(bad)}}
    with pytest.raises(UserError, match="no label column"):
        compare_main([], defaults)
    assert not (tmp_path / "cmp").exists()


def test_attention_cli(comparison, tmp_path):
    from pretrain.cli import main

    out = comparison[0]
    png = tmp_path / "att.png"
    assert main(["attention", str(out / "runs" / "t5_span"), "--text", "the cat sees the river", "--layer", "0",
                 "--out", str(png)]) == 0
    check_png(png)
    assert main(["attention", str(out / "runs" / "gpt2_clm"), "--text", "a dog"]) == 0
    check_png(out / "runs" / "gpt2_clm" / "attention_layer-1.png")


def test_attention_cli_bad_layer(comparison, capsys):
    from pretrain.cli import main

    out = comparison[0]
    assert main(["attention", str(out / "runs" / "bert_mlm"), "--layer", "7"]) == 1
    assert "out of range" in capsys.readouterr().err


def test_mismatched_sizes_refused(tmp_path):
    from models import ModelConfig
    from pretrain.compare.config import CompareConfig
    from pretrain.compare.runner import check_matched
    from pretrain.errors import UserError

    small = ModelConfig.preset("gpt2", vocab_size=500, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=32)
    big = ModelConfig.preset("bert", vocab_size=500, d_model=32, n_layers=4, n_heads=2, d_ff=64, max_seq_len=32)
    with pytest.raises(UserError, match="model sizes differ"):
        check_matched(CompareConfig(), {"a": small, "b": big})


def test_cloze_positions_are_whole_words(comparison):
    import torch

    from pretrain.data.tokenizer import load_tokenizer
    from pretrain.compare.yardstick import cloze_positions, eligible_table

    out = comparison[0]
    tok = load_tokenizer(str(out / "tokenizer"))
    ids = tok(" the cat sees the red ball every morning near the school after lunch", add_special_tokens=False)
    windows = torch.tensor([ids["input_ids"]] * 3)
    positions = cloze_positions(windows, tok, min_context=2, min_right=2, seed=1)
    assert torch.equal(positions, cloze_positions(windows, tok, min_context=2, min_right=2, seed=1))  # seeded
    ok = eligible_table(tok)
    for row, p in zip(windows, positions.tolist()):
        assert p >= 2 and bool(ok[row[p]])


def test_yardstick_text_from_a_streamed_corpus(tmp_path):
    """data.streaming trains; the yardstick must read its held-out windows from a streamed validation split too."""
    from pretrain.compare.yardstick import held_out_windows
    from pretrain.data.corpus import DataConfig, load_corpus
    from pretrain.data.tokenizer import TokenizerConfig, tokenizer_for
    from pretrain.errors import UserError

    corpus = write_corpus(tmp_path / "data", n_paragraphs=200)
    data = DataConfig(files=[str(corpus)], validation_fraction=0.1)
    tokenizer = tokenizer_for(TokenizerConfig(kind="bpe", vocab_size=300), load_corpus(data)[0])
    streamed = held_out_windows(DataConfig(files=[str(corpus)], validation_fraction=0.1, streaming=True), tokenizer,
                                window=16, n=8)
    assert streamed.shape == (8, 16)
    with pytest.raises(UserError, match="validation_fraction"):
        held_out_windows(DataConfig(files=[str(corpus)], validation_fraction=0.0), tokenizer, window=16)


def test_pairs_section(comparison):
    """Every run and its random init scored on the corpus pairs and the grammar set, ± standard errors, per
    perturbation and phenomenon, and a headline naming who beats their random init (issue 30)."""
    out = comparison[0]
    pairs = json.loads((out / "results.json").read_text())["pairs"]
    assert pairs["sources"] == {"corpus": 40, "grammar": 110}
    assert [e["name"] for e in pairs["runs"]] == [r["name"] for r in RUNS]
    for e in pairs["runs"]:
        for source in ("corpus", "grammar"):
            for init in ("trained", "random_init"):
                r = e[init][source]
                assert r["n"] > 0 and 0 <= r["accuracy"] <= 1 and r["stderr"] > 0
        assert set(e["trained"]["corpus"]["groups"]) == {"adjacent_swap", "replacement", "duplication", "half_swap"}
    report = (out / "report.md").read_text()
    assert "## Zero-shot minimal pairs" in report and "beat" in pairs["headline"]
    assert "pseudo-log-likelihood" in report and "per phenomenon" in report
