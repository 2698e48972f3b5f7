"""Launches that cannot run as asked are refused in one line before anything is written: DeepSpeed without a GPU
(Accelerate would quietly train plain data parallel) and FSDP1 on CPU (FSDP2 runs there, tests/test_train_fsdp.py)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model.d_model", "32", "--model.n_heads", "2", "--model.d_ff", "64", "--run.max_steps", "1",
        "--run.progress", "false"]


def run(cmd, env, out: Path):
    proc = subprocess.run(cmd + TINY + ["--run.output_dir", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and errors, proc.stderr[-3000:]
    # no traceback through our code (torchrun adds its own summary of a failed child)
    assert f'File "{REPO}' not in proc.stderr, proc.stderr[-3000:]
    assert not out.exists()  # nothing written: the corrected command starts clean
    return errors[0]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU machine may run DeepSpeed")
def test_deepspeed_without_gpu_is_refused(tmp_path):
    line = run([sys.executable, "recipes/gpt_clm.py"], {"ACCELERATE_USE_DEEPSPEED": "true"}, tmp_path / "run")
    assert "DeepSpeed runs on GPUs only" in line and "fsdp.yaml" in line


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_fsdp1_on_cpu_is_refused(tmp_path):
    line = run(["torchrun", "--standalone", "--nproc_per_node", "2", "recipes/gpt_clm.py"],
               {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, tmp_path / "run")
    assert "fsdp_version: 2" in line
