"""Reliability (issue 9): kill it, fill its disk, poison its loss, lose a peer, feed it pickles -- nothing lost, every
error one clear line, no code from a checkpoint ever runs, no token ever written.

Fault hooks: PRETRAIN_FAULT=POINT:ACTION (pretrain/checkpoint.py fault_point) holds a checkpoint save open so it
can be killed mid-write; disk-full / I/O errors are made by patching the writers accelerate's save_state calls.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain.train.checkpoint import CheckpointManager
from pretrain.cli import main as cli_main
from train_fixtures import tiny_flags, write_corpus

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def env_for(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "PRETRAIN_FAULT", "WANDB"))}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf-home"),
                "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline",
                "WANDB_SILENT": "true", "WANDB_DIR": str(tmp / "wandb-dir"),
                "WANDB_CONFIG_DIR": str(tmp / "wandb-config"), "NETRC": str(tmp / "no-netrc")})
    env.update(extra)
    return env


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("reliability-data"), n_paragraphs=150)


# ---- kill -9, again and again ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_runs_resume_to_the_identical_result(tmp_path):
    """SIGKILL mid-save (between the files and the rename) and mid-training, SIGTERM and SIGINT (each must stop
    after its step with a checkpoint of it and exit 75); resume each time; the final parameters and the whole
    logged curve equal the uninterrupted run's, bit for bit."""
    from chaos import chaos

    result = chaos(tmp_path, kills=4, steps=40, seed=1, verbose=False)
    assert result["kills"] == 4, result
    assert all(result["kinds"].get(k) for k in ("save", "sigterm", "step", "sigint")), result
    assert result["resumes"] >= 3, result
    assert result["same_params"] and result["same_curve"], result


def test_a_half_written_checkpoint_is_never_picked(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_2").mkdir(parents=True)
    (run / "checkpoints" / "step_2" / "trainer_state.json").write_text("{}")
    (run / "checkpoints" / ".tmp-step_4").mkdir()
    (run / "checkpoints" / ".tmp-step_4" / "trainer_state.json").write_text("{}")
    (run / "checkpoints" / "step_6").mkdir()  # a directory without its state file is not complete
    assert CheckpointManager(run / "checkpoints").latest() == run / "checkpoints" / "step_2"


# ---- the disk fills up / fails while saving ------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["enospc_weights", "eio_optimizer"])
def test_failed_checkpoint_write_stops_cleanly_and_keeps_the_previous_one(tmp_path, corpus, monkeypatch, capsys,
                                                                         fault):
    import accelerate.utils.other as acc_other

    def failing(write, path_of):
        def wrapper(*args, **kwargs):
            path = str(path_of(args, kwargs))
            if ".tmp-step_4" in path and (("optimizer" in path) == (fault == "eio_optimizer")):
                Path(path).write_bytes(b"\0" * 100)  # part of the file made it to disk
                code = errno.ENOSPC if fault.startswith("enospc") else errno.EIO
                raise OSError(code, os.strerror(code), path)
            return write(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(acc_other, "safe_save_file", failing(acc_other.safe_save_file, lambda a, k: a[1]))
    monkeypatch.setattr(torch, "save", failing(torch.save, lambda a, k: a[1]))
    flags = tiny_flags(tmp_path, corpus, steps=6, **{"run.save_every": 2, "run.sample": "false",
                                                     "run.mixed_precision": "no"})
    run = tmp_path / "run"
    assert cli_main(["train", *flags]) == 1
    line = one_error_line(capsys.readouterr().err)
    reason = "No space left on device" if fault.startswith("enospc") else "Input/output error"
    assert "could not write checkpoint step 4" in line and reason in line and "--resume" in line, line
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_2"], ckpts  # no half-written step_4, no leftover .tmp
    assert CheckpointManager.read_state(run / "checkpoints" / "step_2")["step"] == 2
    assert load_file(run / "checkpoints" / "step_2" / "model.safetensors")

    monkeypatch.undo()  # the disk has space again: the run resumes from step 2 and finishes
    capsys.readouterr()
    assert cli_main(["train", "--run.output_dir", str(run), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((run / "final" / "metrics.json").read_text())["step"] == 6


# ---- a non-finite loss -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_loss_never_reaches_a_checkpoint(tmp_path, corpus, monkeypatch, capsys, mode):
    from objectives import OBJECTIVES

    cls = OBJECTIVES["mlm"]
    real, calls = cls.loss, {"n": 0}

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss, metrics = real(self, model, batch)
        if calls["n"] == 3:  # the third training step
            loss = loss * float("nan")
            metrics = {**metrics, "loss": metrics["loss"] * float("nan")}
        return loss, metrics

    monkeypatch.setattr(cls, "loss", poisoned)
    flags = tiny_flags(tmp_path, corpus, steps=4, **{"run.save_every": 1, "run.eval_every": 100,
                                                     "run.sample": "false", "run.on_nonfinite": mode,
                                                     "run.mixed_precision": "no"})
    code = cli_main(["train", *flags])
    captured = capsys.readouterr()
    run = tmp_path / "run"
    if mode == "stop":
        assert code == 1
        line = one_error_line(captured.err)
        assert "non-finite loss" in line and "step 3" in line and "on_nonfinite skip" in line, line
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_1", "step_2"]
    else:
        assert code == 0, captured.err
        assert "step 3; step skipped" in captured.out + captured.err
        assert CheckpointManager.read_state(run / "checkpoints" / "step_4")["skipped_steps"] == 1
    for ckpt in (run / "checkpoints").iterdir():
        assert all(bool(torch.isfinite(t).all()) for t in load_file(ckpt / "model.safetensors").values())


# ---- a peer dies or hangs ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(tmp_path: Path, flags: list[str]) -> list[subprocess.Popen]:
    """`pretrain train FLAGS` as two data-parallel processes (gloo), rendezvous by environment as on two
    machines (under torchrun the agent would kill a survivor itself, which hides what each process does)."""
    env = env_for(tmp_path, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
                  LOCAL_WORLD_SIZE="2")
    return [subprocess.Popen([sys.executable, "-m", "pretrain.cli", "train", *flags], cwd=REPO,
                             env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for r in (0, 1)]


def wait_until_training(procs: list[subprocess.Popen], metrics: Path, rows: int) -> None:
    """Return once both processes have logged `rows` metric rows; fail if either exits or nothing comes in 120 s."""
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= rows):
        assert procs[0].poll() is None and procs[1].poll() is None, procs[0].stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the 2-process run did not start training"
        time.sleep(0.05)


def test_every_process_of_a_run_reports_the_main_processs_refusal(tmp_path):
    """Two data-parallel processes on a corpus too small for one block: only the main process reads and packs it,
    and both stop at once with its one error line (not a barrier timeout); nothing is left behind."""
    tiny = write_corpus(tmp_path / "data", n_paragraphs=2)
    flags = tiny_flags(tmp_path, tiny, steps=4, **{"run.sample": "false", "run.seq_len": "64",
                                                  "run.dist_timeout": 600})
    start = time.monotonic()
    procs = two_processes(tmp_path, flags)
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert time.monotonic() - start < 120
    lines = [one_error_line(err) for err in errors]
    assert [p.returncode for p in procs] == [1, 1]
    assert lines[0] == lines[1] and "fewer than one block" in lines[0], lines
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_after_the_same_step(tmp_path, corpus):
    """A scheduler's SIGTERM reaching only one of two data-parallel processes: both finish the same step, write
    one complete checkpoint of it, and exit 75 (resumable); the main process says how to continue."""
    flags = tiny_flags(tmp_path, corpus, steps=4000, **{"run.save_every": 10000, "run.eval_every": 10000,
                                                        "run.sample": "false", "run.mixed_precision": "no"})
    procs = two_processes(tmp_path, flags)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        wait_until_training(procs, metrics, rows=5)
        os.kill(procs[1].pid, signal.SIGTERM)
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [75, 75], [o[1][-2000:] for o in outputs]
    step = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    checkpoint = tmp_path / "run" / "checkpoints" / f"step_{step}"
    assert CheckpointManager.read_state(checkpoint)["step"] == step
    names = {p.name for p in checkpoint.iterdir()}  # only the main process writes the run directory (DDP)
    assert "random_states_0.pkl" in names and "random_states_1.pkl" not in names, names
    line = [ln for ln in outputs[0][1].splitlines() if ln.startswith("stopped")]
    assert line == [f"stopped by a stop request on another process after step {step}; complete checkpoint "
                    f"{checkpoint}; continue with: pretrain train --run.output_dir {tmp_path / 'run'} --resume"]
    assert "Traceback" not in outputs[0][1] + outputs[1][1]


@pytest.mark.slow
@pytest.mark.parametrize("fate", ["dies", "hangs"])
def test_survivor_of_a_two_process_run_exits_within_the_timeout(tmp_path, corpus, fate):
    """Two data-parallel processes (gloo), rendezvous by environment as on two machines. (Under torchrun the agent
    would kill the survivor itself when a worker dies -- which hides a hang on another node; here nothing does.)
    Rank 1 is SIGKILLed ("dies") or SIGSTOPped ("hangs": its sockets stay open, only run.dist_timeout ends the
    wait). Rank 0 must exit non-zero with one error line within the timeout plus a margin."""
    timeout_s = 6
    flags = tiny_flags(tmp_path, corpus, steps=400, **{"run.save_every": 1000, "run.eval_every": 1000,
                                                       "run.sample": "false", "run.mixed_precision": "no",
                                                       "run.dist_timeout": timeout_s})
    procs = two_processes(tmp_path, flags)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        wait_until_training(procs, metrics, rows=3)
        os.kill(procs[1].pid, signal.SIGKILL if fate == "dies" else signal.SIGSTOP)
        t = time.monotonic()
        try:
            _, err = procs[0].communicate(timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank 0 still running {timeout_s + 30}s after its peer {fate}")
        waited = time.monotonic() - t
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                if fate == "hangs":
                    os.kill(p.pid, signal.SIGCONT)
            p.communicate()
    assert procs[0].returncode not in (0, None)
    assert waited < timeout_s + 20, waited
    line = one_error_line(err)
    assert "lost contact" in line and "--resume" in line and "run.dist_timeout" in line, line


# ---- pickles with a payload ----------------------------------------------------------------------------------------
class Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus):
    tmp = tmp_path_factory.mktemp("finished")
    flags = tiny_flags(tmp, corpus, steps=2, **{"run.save_every": 1, "run.sample": "false",
                                                "run.mixed_precision": "no"})
    assert cli_main(["train", *flags]) == 0
    return tmp / "run"


@pytest.mark.parametrize("target", ["model", "optimizer", "rng"])
def test_pickled_checkpoint_with_a_payload_is_refused_on_resume(tmp_path, finished_run, capsys, target):
    run = shutil.copytree(finished_run, tmp_path / "run")
    ckpt = run / "checkpoints" / "step_2"
    marker = tmp_path / "PWNED"
    if target == "model":  # the weights as a pickle instead of safetensors
        (ckpt / "model.safetensors").unlink()
        torch.save({"weight": Payload(marker)}, ckpt / "pytorch_model.bin")
    elif target == "optimizer":
        torch.save({"state": Payload(marker)}, ckpt / "optimizer.bin")
    else:
        torch.save({"random_state": Payload(marker)}, ckpt / "random_states_0.pkl")
    capsys.readouterr()
    code = cli_main(["train", "--run.output_dir", str(run), "--resume", "--run.max_steps", "3"])
    assert not marker.exists(), "the pickled payload ran"
    if target == "rng":  # accelerate skips an unloadable RNG file; exactness does not need it (seeded per step)
        assert code == 0 and "Traceback" not in capsys.readouterr().err
        return
    assert code != 0
    line = one_error_line(capsys.readouterr().err)
    assert "step_2" in line and "could not be loaded" in line, line


def test_pickled_transformers_weights_are_refused_on_import_and_init(tmp_path, finished_run, capsys, corpus):
    from transformers import BertConfig

    marker = tmp_path / "PWNED"
    folder = tmp_path / "hf-model"
    folder.mkdir()
    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(folder)
    shutil.copy(finished_run / "tokenizer" / "tokenizer.json", folder)
    shutil.copy(finished_run / "tokenizer" / "tokenizer_config.json", folder)
    torch.save({"bert.embeddings.word_embeddings.weight": Payload(marker)}, folder / "pytorch_model.bin")

    assert cli_main(["export", "--from-hub", str(folder), "--out", str(tmp_path / "imported")]) != 0
    one_error_line(capsys.readouterr().err)
    assert not marker.exists(), "the pickled payload ran (export --from-hub)"

    flags = tiny_flags(tmp_path, corpus, steps=1, **{"model.init_from": str(folder), "run.sample": "false"})
    assert cli_main(["train", *flags]) != 0
    one_error_line(capsys.readouterr().err)
    assert not marker.exists(), "the pickled payload ran (model.init_from)"


# ---- remote code -------------------------------------------------------------------------------------------------
def test_no_code_path_trusts_remote_code():
    offenders = []
    for folder in ("pretrain", "models", "objectives", "recipes", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"trust_remote_code\s*=\s*(True|1\b)", line):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders


# ---- tokens never written ----------------------------------------------------------------------------------------
def test_a_hub_token_in_the_environment_is_never_written_or_printed(tmp_path, corpus):
    token = "hf_" + "FakeTokenForLeakTest" + "0123456789abcdefXYZ"
    env = env_for(tmp_path, HF_TOKEN=token, HUGGING_FACE_HUB_TOKEN=token)
    work = tmp_path / "work"
    flags = tiny_flags(work, corpus, steps=2, **{"run.save_every": 1, "run.report_to": "wandb",
                                                 "run.mixed_precision": "no"})
    outputs = []
    for argv in (["train", *flags],
                 ["export", str(work / "run"), "--out", str(work / "hf"), "--push-to-hub", "someone/tiny"]):
        proc = subprocess.run([sys.executable, "-m", "pretrain.cli", *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        outputs.append(proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (work / "run" / "final").is_dir() and (work / "hf" / "config.json").is_file()
    assert "cannot push to the Hub" in outputs[1]  # offline: the push fails, its message scrubbed
    assert not [out for out in outputs if token in out]
    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert not leaks, leaks
