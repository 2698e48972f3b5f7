"""A live run directory belongs to its run (issue 29, point 8): a second `pretrain train` into a directory another
process is training into is refused in one line naming that process, even with --overwrite, and touches nothing;
reading the live run (`pretrain eval`) works; once the first process is SIGKILLed, --resume continues it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretrain.errors import UserError
from pretrain.train.run_lock import RunLock
from test_reliability import env_for, one_error_line
from train_fixtures import tiny_flags, write_corpus

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def train(flags, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pretrain.cli", "train", *flags], cwd=REPO, text=True,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_second_writer_is_refused_while_the_run_lives_and_resume_works_after_a_kill(tmp_path, capsys):
    from pretrain.cli import main as cli_main
    from pretrain.train.eval_run import evaluate_run

    corpus = write_corpus(tmp_path / "data", n_paragraphs=60)
    flags = tiny_flags(tmp_path, corpus, steps=4, **{"run.save_every": 2, "run.eval_every": 2,
                                                    "run.sample": "false"})
    run = tmp_path / "run"
    env = env_for(tmp_path)
    first = train(flags, **env, PRETRAIN_FAULT="step:sleep=120", PRETRAIN_FAULT_STEP="3")  # stalls in step 3
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "step_2" / "trainer_state.json").is_file():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first run did not reach its first checkpoint"
            time.sleep(0.1)
        before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))

        capsys.readouterr()
        assert cli_main(["train", *flags, "--overwrite"]) == 1  # the second writer (this process)
        line = one_error_line(capsys.readouterr().err)
        assert "in use by a live run" in line and f"pid {first.pid} on {os.uname().nodename}" in line, line
        assert "cli.py train --data.files" in line and f"kill {first.pid}" in line and "--resume" in line, line
        assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing deleted or written

        metrics = evaluate_run(str(run), checkpoint="step_2")  # reading a live run is allowed
        assert metrics["n_predicted"] > 0 and "step_2" in metrics["weights"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL

    assert cli_main(["train", *flags, "--resume"]) == 0  # the killed run's lock died with it
    assert (run / "final" / "model.safetensors").is_file()


def test_the_lock_is_one_per_directory_and_a_refused_start_leaves_nothing(tmp_path):
    """Within one process too (a comparison runs its runs in turn): a held directory is refused; a directory the
    lock made for a run that then failed is removed again; the lock file survives a release."""
    held = RunLock(tmp_path / "a").acquire()
    with pytest.raises(UserError, match="another process, still starting"):
        RunLock(tmp_path / "a").acquire()
    held.record()
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path / "a").acquire()
    held.release()
    again = RunLock(tmp_path / "a").acquire()
    again.release()
    assert (tmp_path / "a" / ".lock").is_file()
    refused = RunLock(tmp_path / "b").acquire()
    refused.release(discard=True)  # nothing but the lock was written: the directory goes too
    assert not (tmp_path / "b").exists()


def test_a_filesystem_that_cannot_lock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, capsys):
    import errno

    from pretrain.train import run_lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    RunLock(tmp_path / "nfs").acquire().release()
    assert "cannot lock files" in capsys.readouterr().err
