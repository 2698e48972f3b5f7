"""The `pretrain` command: one error line on stderr, exit 2 for usage / config mistakes, no traceback."""
import os
import subprocess
import sys

import pytest

from pretrain.cli import main


def _run_main(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, code, words", [
    (["train", "--model.dmodel", "5"], 2, ["dmodel"]),
    (["train", "--run.batch_size", "many"], 2, ["run.batch_size", "int"]),
    (["train", "--model.preset", "gpt2"], 2, ["mlm", "decoder"]),  # objective vs architecture
    (["train", "--run.seq_len", "1024"], 2, ["max_seq_len"]),
    (["fly"], 2, ["unknown command", "train"]),
    ([], 2, []),
])
def test_usage_errors(capsys, argv, code, words):
    got, out, err = _run_main(capsys, argv)
    assert got == code
    if words:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err
        for word in words:
            assert word in lines[0]


def test_eval_of_a_directory_without_a_run(capsys, tmp_path):
    code, _, err = _run_main(capsys, ["eval", str(tmp_path)])
    assert code == 2 and err.startswith("error: ") and "not a run directory" in err


def test_existing_run_is_refused(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("run: {}\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    code, _, err = _run_main(capsys, ["train", "--run.output_dir", str(run), "--run.max_steps", "1"])
    assert code == 2 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'  # nothing touched


def test_console_script_has_no_traceback():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pretrain.cli", "train", "--optim.lr", "fast"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: invalid value 'fast' for optim.lr: expected float; fix it on the command line or in the YAML"]


def test_help_lists_the_sections(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for key in ("--model.preset", "--objective.name", "--optim.lr", "--run.max_time", "--config", "--resume"):
        assert key in out
