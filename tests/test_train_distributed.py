"""A real 2-process data-parallel run on CPU (gloo), launched with `torchrun --nproc_per_node 2` (accelerate launch
--cpu --num_processes 2 starts one process: accelerate issue #2741), against 1 process with twice the batch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("train_dp_worker.py")


def _run(cmd, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _train_losses(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_processes_match_one_process_with_double_batch(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    two, one = tmp_path / "two", tmp_path / "one"
    _run(["torchrun", "--standalone", "--nproc_per_node", "2", str(WORKER), str(two), "4", "2"], repo)
    _run([sys.executable, str(WORKER), str(one), "8", "2"], repo)

    ranks = [json.loads((two / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]  # two processes really ran
    assert ranks[0]["backend"] == "gloo"
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])  # each rank saw different blocks
    single = json.loads((one / "rank_0.json").read_text())
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == sorted(single["seen"])  # together: the 2b batch

    p0, p1 = torch.load(two / "params_0.pt", weights_only=True), torch.load(two / "params_1.pt", weights_only=True)
    for name in p0:  # gradients were synchronized: identical parameters after the steps
        assert torch.equal(p0[name], p1[name]), name
    ref = torch.load(one / "params_0.pt", weights_only=True)
    for name in p0:
        assert torch.allclose(p0[name], ref[name], atol=1e-4), name

    for a, b in zip(_train_losses(two / "run"), _train_losses(one / "run"), strict=True):
        assert abs(a - b) < 1e-5
