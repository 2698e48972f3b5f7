"""Resume exactness in a new process, refusal of an existing run, mismatched resumes, trackers."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain.cli import main as cli_main
from train_fixtures import tiny_flags, write_corpus

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]



def recipe(name, flags):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "recipes" / f"{name}.py"), *flags], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def rows(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path):
    return [(r["split"], r["step"], r["loss"]) for r in rows(run) if r["split"] in ("train", "val")]


def test_resume_in_a_new_process_reproduces_the_run(tmp_path):
    corpus = write_corpus(tmp_path / "data")
    straight = tiny_flags(tmp_path / "a", corpus, steps=16, **{"run.save_every": 4, "run.eval_every": 4,
                                                               "model.dropout": 0.1})
    proc = recipe("bert_mlm", straight)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_a = tmp_path / "a" / "run"
    # the same run, stopped at step 8 and resumed in a new process (same tokenizer: tokenizer.path)
    paused = tiny_flags(tmp_path / "b", corpus, steps=16, **{"run.save_every": 4, "run.eval_every": 4,
                                                             "model.dropout": 0.1,
                                                             "tokenizer.path": str(run_a / "tokenizer")})
    proc = recipe("bert_mlm", paused + ["--run.stop_at_step", "8"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_b = tmp_path / "b" / "run"
    assert not (run_b / "final").exists() and (run_b / "checkpoints" / "step_8").is_dir()
    with (run_b / "metrics.jsonl").open("a") as f:  # rows a killed run logged after its last checkpoint
        f.write(json.dumps({"split": "train", "step": 9, "loss": 123.0}) + "\n")
    proc = recipe("bert_mlm", ["--run.output_dir", str(run_b), "--resume"])  # the rest comes from config.yaml
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout

    assert losses(run_b) == losses(run_a)  # steps 9..16 identical, no duplicate rows
    final_a, final_b = load_file(run_a / "final" / "model.safetensors"), load_file(run_b / "final" / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_existing_run_refused_overwrite_replaces_and_mismatch_is_named(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "data")
    flags = tiny_flags(tmp_path, corpus, steps=4, **{"run.save_every": 2})
    run = tmp_path / "run"
    assert cli_main(["train", *flags]) == 0
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()

    assert cli_main(["train", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and "Traceback" not in err
    assert (run / "metrics.jsonl").read_text() == before  # nothing touched

    assert cli_main(["train", "--run.output_dir", str(run), "--resume", "--model.d_model", "48"]) == 2
    err = capsys.readouterr().err
    assert "different model" in err and "d_model 32 -> 48" in err

    assert cli_main(["train", *flags, "--overwrite", "--run.max_steps", "2"]) == 0
    assert [r["step"] for r in rows(run) if r["split"] == "train"] == [1, 2]


@pytest.mark.parametrize("tracker, pattern", [("tensorboard", "tensorboard/**/events.out.tfevents.*"),
                                              ("wandb", "wandb/offline-run-*/run-*.wandb")])
def test_trackers_write_their_files(tmp_path, monkeypatch, capsys, tracker, pattern):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    corpus = write_corpus(tmp_path / "data")
    flags = tiny_flags(tmp_path, corpus, steps=3, **{"run.report_to": tracker, "run.sample": "false"})
    assert cli_main(["train", *flags]) == 0
    run = tmp_path / "run"
    assert glob.glob(str(run / pattern), recursive=True), sorted(p.name for p in run.iterdir())
    if tracker == "wandb":
        assert "wandb sync" in capsys.readouterr().out


def test_streaming_run_wraps_epochs_and_resumes_exactly(tmp_path):
    """data.streaming: each step reads the next blocks of the stream; an epoch ends when the stream does (here after
    8 steps); a run stopped at step 9 and resumed re-reads its position and logs the same losses and weights."""
    corpus = write_corpus(tmp_path / "data", n_paragraphs=60)
    extra = {"data.streaming": "true", "run.save_every": 3, "run.eval_every": 3, "model.dropout": 0.1,
             "run.sample": "false"}
    assert cli_main(["train", *tiny_flags(tmp_path / "a", corpus, steps=12, **extra)]) == 0
    run_a = tmp_path / "a" / "run"
    epochs = [r["epoch"] for r in rows(run_a) if r["split"] == "train"]
    assert epochs == [0] * 8 + [1] * 4  # the stream was read again; the resume below starts inside epoch 1
    paused = tiny_flags(tmp_path / "b", corpus, steps=12, **extra, **{"tokenizer.path": str(run_a / "tokenizer")})
    assert cli_main(["train", *paused, "--run.stop_at_step", "9"]) == 0
    run_b = tmp_path / "b" / "run"
    assert cli_main(["train", "--run.output_dir", str(run_b), "--resume"]) == 0
    assert losses(run_b) == losses(run_a)
    final_a, final_b = load_file(run_a / "final" / "model.safetensors"), load_file(run_b / "final" / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_console_says_what_happens_in_one_line_per_phase(tmp_path, capsys):
    """--resume with nothing to resume says it starts from step 0; the tokenizer line says when the corpus gave
    another size than asked; `datasets`' own progress bars do not show between our lines."""
    corpus = write_corpus(tmp_path / "data", n_paragraphs=80)
    assert cli_main(["train", *tiny_flags(tmp_path, corpus, steps=2, **{"run.sample": "false"}), "--resume"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert f"--resume: no complete checkpoint in {tmp_path / 'run' / 'checkpoints'}; starting from step 0" in out
    assert "corpus: local files `corpus.txt`" in out and " training / " in out
    assert "tokenizer: trained wordpiece" in out and "warning: tokenizer.vocab_size asked 400" in out
    for bar in ("Generating train split", "Casting the dataset", "Saving the dataset", "cleaning documents",
                "tokenizing"):
        assert bar not in out + captured.err, bar
