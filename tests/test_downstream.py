"""Downstream evaluation (issue 16): `pretrain finetune` fine-tunes and probes a pretrained run of every family
through transformers' own sequence classifiers; a task whose label is a function of the text is learned, shuffled
labels are not (a label leak would fail), the probe leaves the backbone untouched, bad input is refused in one line
with nothing written, and the scores are the textbook ones."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch

from pretrain.cli import main as cli_main
from train_fixtures import FAMILY_SETUP, family_run, write_corpus, write_word_task

FAMILIES = tuple(FAMILY_SETUP)
ARCH = {"bert": "encoder", "gpt2": "decoder", "llama": "decoder", "bart": "encoder-decoder", "t5": "encoder-decoder",
        "modernbert": "encoder", "modernbert_decoder": "decoder"}


def tiny_run(root: Path, family: str) -> Path:
    """A real run of a few dozen steps on the templated corpus (so the tokenizer knows the task's words)."""
    corpus = write_corpus(root / "corpus", n_paragraphs=150)
    return family_run(root / f"run_{family}", family, corpus, root / "cache", 20, **{
        "--run.seq_len": 32, "--run.batch_size": 8, "--run.eval_every": 20, "--run.save_every": 20,
        "--optim.warmup_steps": 2})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    return {family: tiny_run(root, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    return {"train": write_word_task(root / "train.csv", 240, 0), "validation": write_word_task(root / "val.csv", 100, 1),
            "test": write_word_task(root / "test.csv", 200, 2),
            "shuffled": write_word_task(root / "shuffled.csv", 240, 3, shuffle_labels=True)}


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["finetune", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


FAST = ["--epochs", "6", "--lr", "3e-3", "--batch-size", "16", "--no-progress"]


# ---- it learns what the text says, and nothing else ----------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_finetune_learns_a_word_task_and_writes_results(family, runs, task_files, one_thread):
    """Each family's transformers classifier, fine-tuned from its tiny pretrained run, learns whether the text
    mentions a word (>= 90% test accuracy)."""
    out = runs[family] / "finetune" / "train"
    code, stdout, stderr = run_cli([runs[family], "--task", task_files["train"], "--validation",
                                    task_files["validation"], "--test", task_files["test"], "--mode", "finetune",
                                    "--seeds", "1", "--no-baseline", *FAST])
    assert code == 0, stderr
    results = json.loads((out / "results.json").read_text())
    test = results["finetune"]["pretrained"]["per_seed"][0]["test"]
    assert test["accuracy"] >= 0.9, (family, test)
    assert set(test) == {"accuracy", "macro_f1", "mcc"}  # two classes: Matthews correlation too
    assert results["task"]["labels"] == ["no", "yes"] and results["task"]["sizes"] == {
        "train": 240, "validation": 100, "test": 200}
    assert results["model"]["arch"] == ARCH[family]
    assert "finetune pretrained" in stdout and str(out / "results.json") in stdout


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_shuffled_labels_stay_at_chance(family, runs, task_files, tmp_path, one_thread):
    """Labels shuffled against the texts: test accuracy within 0.5 +- 3 standard errors (a leak would not be)."""
    code, _, stderr = run_cli([runs[family], "--task", task_files["shuffled"], "--test", task_files["test"],
                               "--validation", task_files["validation"], "--mode", "finetune", "--seeds", "1",
                               "--no-baseline", "--out", tmp_path / "out", *FAST])
    assert code == 0, stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    accuracy = results["finetune"]["pretrained"]["per_seed"][0]["test"]["accuracy"]
    n = results["task"]["sizes"]["test"]
    assert abs(accuracy - 0.5) <= 3 * math.sqrt(0.25 / n), accuracy


def test_probe_leaves_the_backbone_bit_identical(runs, task_files, tmp_path):
    from pretrain.evaluate.classifier import classifier, open_backbone
    from pretrain.evaluate.finetune import probe
    from pretrain.evaluate.recipe import ProbeRecipe
    from pretrain.evaluate.tasks import TaskSpec, load_task

    task = load_task(TaskSpec(task=str(task_files["train"]), validation=str(task_files["validation"]),
                              test=str(task_files["test"])))
    backbone = open_backbone(runs["bert"], tmp_path)
    model = classifier(backbone, task.num_labels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = probe(backbone, task, ProbeRecipe(), model=model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result["test"]["accuracy"] > 0.5 and result["l2"] in ProbeRecipe().l2_grid


def test_seeds_baseline_and_model_card_line(runs, task_files, tmp_path, one_thread):
    """Both modes, two seeds, the random-init baseline: spreads in results.json; an export afterwards quotes it."""
    code, stdout, stderr = run_cli([runs["gpt2"], "--task", task_files["train"], "--seeds", "2", "--epochs", "2",
                                    "--lr", "3e-3", "--batch-size", "32", "--no-progress"])
    assert code == 0, stderr
    results = json.loads((runs["gpt2"] / "finetune" / "train" / "results.json").read_text())
    assert results["task"]["notes"] and "stratified" in results["task"]["notes"][0]  # one file: a seeded split
    assert results["task"]["sizes"] == {"train": 192, "validation": 24, "test": 24}
    for mode in ("probe", "finetune"):
        assert set(results[mode]) == {"pretrained", "random_init"}
        assert len(results[mode]["random_init"]["per_seed"]) == 2
        test = results[mode]["random_init"]["spread"]["test"]["accuracy"]
        assert test["min"] <= test["median"] <= test["max"]
    assert len(results["probe"]["pretrained"]["per_seed"]) == 1  # convex fit on fixed features: seed-free
    from pretrain.export.to_hf import export_run

    card = (export_run(runs["gpt2"], tmp_path / "exported", log=lambda m: None) / "README.md").read_text()
    assert "Downstream evaluation" in card and "train" in card and "random init" in card


# ---- bad input: one line, nothing written --------------------------------------------------------------------
def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


BAD = {
    "no_label_column": ("t.csv", [{"text": f"text {i}", "y": i % 2} for i in range(20)], [], "no label column"),
    "one_class": ("t.csv", [{"text": f"text {i}", "label": "a"} for i in range(20)], [], "only one class"),
    "float_label": ("t.jsonl", [{"text": f"text {i}", "label": i / 2} for i in range(20)], [],
                    "labels must be strings or integers"),
    "missing_pair_column": ("t.csv", [{"text": f"text {i}", "label": i % 2} for i in range(20)],
                            ["--text-pair-column", "hypothesis"], "no column 'hypothesis'"),
    "fewer_examples_than_classes": ("t.csv", [{"text": f"text {i}", "label": i} for i in range(3)] +
                                    [{"text": "more", "label": 0}], [], "too few to split"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_task_refused_in_one_line_with_nothing_written(case, runs, tmp_path):
    name, rows, extra, message = BAD[case]
    task = _write(tmp_path / name, rows)
    before = sorted(p.name for p in runs["bert"].iterdir())
    code, stdout, stderr = run_cli([runs["bert"], "--task", task, *extra, "--no-progress"])
    assert code in (1, 2) and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in runs["bert"].iterdir()) == before  # no finetune/ folder


def test_fewer_examples_than_classes_in_files(runs, tmp_path):
    train = _write(tmp_path / "train.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    val = _write(tmp_path / "val.csv", [{"text": "c", "label": "z"}])
    code, _, stderr = run_cli([runs["bert"], "--task", train, "--validation", val, "--test", val])
    assert code == 1 and "the training split lacks" in stderr


def test_hub_task_offline_and_usage_errors(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, stderr = run_cli([runs["bert"], "--task", "hub:nyu-mll/glue:sst2"])
    assert code == 1 and "HF_HUB_OFFLINE=1" in stderr and stderr.count("\n") == 1
    for args, message in ((["--seeds", "0"], "--seeds 0 must be positive"),
                          (["--split", "0.5"], "two fractions"),
                          (["--mode", "nope"], "invalid choice")):
        code, _, stderr = run_cli([runs["bert"], *args])
        assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr
    code, _, stderr = run_cli([tmp_path / "missing"])
    assert code == 1 and "does not exist" in stderr
    assert not (runs["bert"] / "finetune" / "stdlib-area").exists()


def test_generic_transformer_family_refused(tmp_path):
    """A preset transformers has no class for: the export's refusal, one line."""
    from pretrain.evaluate.classifier import open_backbone
    from pretrain.errors import UserError
    from pretrain.train.main import train_main

    corpus = write_corpus(tmp_path / "c", n_paragraphs=40)
    argv = ["--data.files", json.dumps([str(corpus)]), "--model.preset", "transformer", "--model.d_model", "32",
            "--model.n_layers", "1", "--model.n_heads", "2", "--model.d_ff", "64", "--model.max_seq_len", "64",
            "--objective.name", "clm", "--tokenizer.kind", "bpe", "--tokenizer.vocab_size", "300",
            "--run.seq_len", "32", "--run.batch_size", "4", "--run.max_steps", "2", "--run.progress", "false",
            "--run.sample", "false", "--run.output_dir", str(tmp_path / "run"), "--run.cache_dir",
            str(tmp_path / "cache")]
    with contextlib.redirect_stdout(io.StringIO()):
        train_main(None, argv)
    with pytest.raises(UserError, match="matches no transformers family"):
        open_backbone(tmp_path / "run", tmp_path / "work")


# ---- the scores are the textbook ones --------------------------------------------------------------------------
def test_scores_against_hand_computed_values():
    from pretrain.evaluate.scores import scores, spread

    gold = [0, 0, 0, 1, 1, 1, 1, 0]
    pred = [0, 1, 0, 1, 1, 0, 1, 0]  # tp 3, tn 3, fp 1, fn 1
    s = scores(pred, gold, 2)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["mcc"] == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))
    assert s["macro_f1"] == pytest.approx(0.75)
    s3 = scores([0, 0, 2, 2], [0, 1, 2, 2], 3)  # class 1 never predicted: F1 0; class 0 F1 2/3; class 2 F1 1
    assert s3["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3) and "mcc" not in s3
    assert scores([1] * 4, [1] * 4, 2)["mcc"] == 0.0  # an empty row / column: 0, not a division by zero
    assert spread([{"a": 1.0}, {"a": 3.0}, {"a": 2.0}]) == {"a": {"median": 2.0, "min": 1.0, "max": 3.0}}


def test_one_split_given_leaves_its_share_of_the_rows_in_train(task_files):
    """--task train.csv --test test.csv: only validation is cut out of train (10%); the 10% a three-way split
    would have given to test stays in train instead of being dropped. Likewise with --validation alone."""
    from pretrain.evaluate.tasks import TaskSpec, load_task

    train, validation, test = (task_files[s] for s in ("train", "validation", "test"))  # 240, 100, 200 rows
    only_test = load_task(TaskSpec(task=str(train), test=str(test)))
    assert {s: only_test.size(s) for s in only_test.splits} == {"train": 216, "validation": 24, "test": 200}
    assert only_test.notes[0].startswith("validation held out") and "the rest trains" in only_test.notes[0]
    only_validation = load_task(TaskSpec(task=str(train), validation=str(validation)))
    assert {s: only_validation.size(s) for s in only_validation.splits} == {"train": 216, "validation": 100,
                                                                            "test": 24}
    neither = load_task(TaskSpec(task=str(train)))  # both missing: the three-way split, as before
    assert {s: neither.size(s) for s in neither.splits} == {"train": 192, "validation": 24, "test": 24}
    texts = [t for s in ("train", "validation") for t in only_test.splits[s]["text"]]
    assert len(texts) == 240  # every row of the file used once


# ---- the protocol behind the verdicts: each of these fails on a wrong version that once passed the suite -----------
def test_probe_chooses_its_l2_on_validation_never_on_test(monkeypatch):
    """Features where the test labels are the validation labels flipped: the weak penalty is right on validation
    (100%) and wrong on test; the strong one (weights ~0, the bias alone: the majority class) is the reverse.
    The probe must pick the weak one, by validation."""
    from pretrain.evaluate import finetune
    from pretrain.evaluate.recipe import ProbeRecipe
    from pretrain.evaluate.tasks import Task

    g = torch.Generator().manual_seed(0)
    signal = {s: torch.randn(n, 1, generator=g) for s, n in (("train", 60), ("validation", 40), ("test", 40))}
    labels = {s: (x[:, 0] > -0.3).long().tolist() for s, x in signal.items()}  # class 1 the majority
    labels["test"] = [1 - y for y in labels["test"]]
    task = Task("flip", "", [0, 1], {s: {"text": [s] * len(y), "text_pair": None, "label": y}
                                     for s, y in labels.items()})
    monkeypatch.setattr(finetune, "_encoded", lambda backbone, task, split, max_length: split)
    monkeypatch.setattr(finetune, "features", lambda backbone, model, split, batch_size: signal[split])
    result = finetune.probe(None, task, ProbeRecipe(l2_grid=(1e-4, 100.0)), model=object())
    assert result["l2"] == 1e-4
    assert result["validation"]["accuracy"] > 0.9 and result["test"]["accuracy"] < 0.1


def test_evaluate_runs_the_protocol_it_reports(monkeypatch):
    """Which model each cell comes from: the pretrained probe once (seed-free), the random-init probe and both
    fine-tunings once per seed, the baseline always with pretrained=False."""
    from pretrain.evaluate import evaluate as module
    from pretrain.evaluate.tasks import Task

    calls = []

    def fake(mode):
        def run(backbone, task, recipe, pretrained, seed, **kwargs):
            calls.append((mode, pretrained, seed))
            return {"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.5}, "seconds": 0.0}
        return run

    monkeypatch.setattr(module, "probe", fake("probe"))
    monkeypatch.setattr(module, "fine_tune", fake("finetune"))
    task = Task("t", "", [0, 1], {s: {"text": ["a", "b"], "text_pair": None, "label": [0, 1]}
                                  for s in ("train", "validation", "test")})
    backbone = type("B", (), {"source": "x", "description": "", "model_type": "bert", "arch": "encoder"})()
    module.evaluate(backbone, task, seeds=(0, 1, 2), baseline=True, progress=False, log=lambda m: None)
    assert calls == [("probe", True, 0), ("probe", False, 0), ("probe", False, 1), ("probe", False, 2),
                     ("finetune", True, 0), ("finetune", True, 1), ("finetune", True, 2),
                     ("finetune", False, 0), ("finetune", False, 1), ("finetune", False, 2)]


def test_random_init_baseline_holds_none_of_the_pretrained_weights(runs, tmp_path):
    """classifier(pretrained=False) is the architecture with fresh weights drawn from the seed: equal to
    transformers' own from_config under that seed, and sharing no weight matrix with the pretrained model."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from pretrain.evaluate.classifier import classifier, open_backbone

    backbone = open_backbone(runs["bert"], tmp_path)
    pretrained = classifier(backbone, 2, pretrained=True, seed=1).state_dict()
    baseline = classifier(backbone, 2, pretrained=False, seed=1).state_dict()
    config = AutoConfig.from_pretrained(str(backbone.folder), num_labels=2)
    config.pad_token_id = backbone.tokenizer.pad_token_id
    torch.manual_seed(1)
    reference = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32).state_dict()
    assert baseline.keys() == reference.keys() == pretrained.keys()
    assert all(torch.equal(baseline[k], reference[k]) for k in reference)
    matrices = [k for k, v in pretrained.items() if v.dim() == 2 and "classifier" not in k]
    assert matrices and not any(torch.equal(baseline[k], pretrained[k]) for k in matrices)


# ---- encoder-decoders judged by their encoders -------------------------------------------------------------------
def _with_changed_weights(folder: Path, out: Path, which: str) -> Path:
    """A copy of an exported folder with noise added to every weight of the decoder (or the encoder) stack."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    weights = load_file(str(out / "model.safetensors"))
    changed = [k for k in weights if k.startswith((f"{which}.", f"model.{which}.")) and "embed_tokens" not in k]
    assert changed
    g = torch.Generator().manual_seed(0)
    for k in changed:
        weights[k] = weights[k] + 0.5 * torch.randn(weights[k].shape, generator=g)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_pooled_probe_reads_the_encoder_only(family, runs, task_files, tmp_path):
    """The encoder-pooled features are transformers' encoder's final states averaged over the real tokens; new
    decoder weights leave them bit-identical, new encoder weights change them."""
    import dataclasses

    from transformers import AutoModel

    from pretrain.evaluate.classifier import classifier, encode, open_backbone, pad, pooled_features

    backbone = open_backbone(runs[family], tmp_path / "a")
    batch = pad(backbone, encode(backbone, ["a short one", "and a somewhat longer sentence here"], None, 32))

    def feats(b):
        model = classifier(b, 2, pooling="encoder").eval()
        with torch.no_grad():
            return pooled_features(b, model, batch)

    base = feats(backbone)
    reference = AutoModel.from_pretrained(str(backbone.folder)).eval().get_encoder()
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(base, (hidden * mask).sum(1) / mask.sum(1), atol=1e-6)
    decoder = dataclasses.replace(backbone, folder=_with_changed_weights(backbone.folder, tmp_path / "d", "decoder"))
    assert torch.equal(feats(decoder), base)
    encoder = dataclasses.replace(backbone, folder=_with_changed_weights(backbone.folder, tmp_path / "e", "encoder"))
    assert not torch.allclose(feats(encoder), base, atol=1e-3)
    # transformers' own (decoder-pooled) classifier does read the decoder: the test can see the difference
    native = classifier(backbone, 2).eval(), classifier(decoder, 2).eval()
    with torch.no_grad():
        assert not torch.allclose(pooled_features(backbone, native[0], batch),
                                  pooled_features(decoder, native[1], batch), atol=1e-3)


def test_encoder_pooling_in_evaluate_and_its_random_init(runs, task_files, tmp_path, one_thread):
    """evaluate(encoder_pooling=True) on a T5 adds probe_encoder / finetune_encoder beside the native modes; the
    encoder-pooled random-init baseline holds none of the pretrained encoder's weights."""
    from pretrain.evaluate.classifier import classifier, open_backbone
    from pretrain.evaluate.evaluate import evaluate, summary_lines
    from pretrain.evaluate.recipe import FinetuneRecipe
    from pretrain.evaluate.tasks import TaskSpec, load_task

    backbone = open_backbone(runs["t5"], tmp_path)
    pretrained = classifier(backbone, 2, pretrained=True, pooling="encoder").state_dict()
    baseline = classifier(backbone, 2, pretrained=False, seed=0, pooling="encoder").state_dict()
    matrices = [k for k, v in pretrained.items() if v.dim() == 2 and k.startswith("encoder.") and "embed" not in k]
    assert matrices and not any(torch.equal(baseline[k], pretrained[k]) for k in matrices)
    task = load_task(TaskSpec(task=str(task_files["train"]), validation=str(task_files["validation"]),
                              test=str(task_files["test"]), max_train=48))
    results = evaluate(backbone, task, ("finetune",), (0,), True, FinetuneRecipe(epochs=1, batch_size=16,
                                                                                  max_length=32),
                       progress=False, log=lambda m: None, encoder_pooling=True)
    assert set(results) >= {"finetune", "finetune_encoder"} and "probe" not in results
    assert set(results["finetune_encoder"]) == {"pretrained", "random_init"}
    assert any(line.startswith("finetune_encoder") for line in summary_lines(results))
