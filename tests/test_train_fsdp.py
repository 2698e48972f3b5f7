"""FSDP2 through Accelerate on CPU (gloo), launched as a user launches it: `accelerate launch --config_file
recipes/accelerate/fsdp.yaml --num_processes N recipes/gpt_clm.py ...`. Accelerate selects FSDP only on accelerator
devices; pretrain/train/engines.py switches a CPU launch to FSDP2 (the config is used unchanged). Against the same
run data parallel (recipes/accelerate/multi_gpu.yaml): the same losses; killed and resumed: the same run; resumed
with another number of processes: the shards re-split; the gathered final model exports to GPT2LMHeadModel."""
import json
import os
import random
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = shutil.which("accelerate")
pytestmark = pytest.mark.skipif(ACCELERATE is None, reason="accelerate's launcher not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: str, processes: int, out: Path, common: list, *extra, env=None, expect=0):
    cmd = [ACCELERATE, "launch", "--config_file", str(REPO / "recipes/accelerate" / config), "--num_processes",
           str(processes), "--main_process_port", str(free_port()), str(REPO / "recipes/gpt_clm.py"), *common,
           "--run.output_dir", str(out), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def train_rows(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r.get("split") == "train"}


def assert_same_losses(a: Path, b: Path, tol: float):
    ra, rb = train_rows(a), train_rows(b)
    assert sorted(ra) == sorted(rb) == list(range(1, 7))
    for step in ra:
        assert abs(ra[step]["loss"] - rb[step]["loss"]) < tol, (step, ra[step]["loss"], rb[step]["loss"])
        assert ra[step]["lr"] == rb[step]["lr"]


def weights(folder: Path) -> dict:
    from pretrain.train.run_dir import WEIGHTS, load_state_dict
    return load_state_dict(folder / WEIGHTS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One data-parallel run and the FSDP runs, 6 steps each, 2 processes x batch 4 (1 x 8 after re-sharding)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    (tmp / "corpus.txt").write_text("\n\n".join(" ".join(rng.choices(words, k=rng.randint(20, 80)))
                                                for _ in range(400)))
    common = ["--data.files", str(tmp / "corpus.txt"), "--tokenizer.vocab_size", "400", "--model.d_model", "32",
              "--model.n_heads", "2", "--model.d_ff", "64", "--model.max_seq_len", "32", "--run.seq_len", "32",
              "--run.max_steps", "6", "--run.save_every", "3", "--run.eval_every", "3", "--optim.warmup_steps", "2",
              "--optim.lr", "1e-2", "--run.mixed_precision", "no", "--run.progress", "false", "--run.sample",
              "false", "--run.keep_last", "5", "--run.dist_timeout", "60"]
    ddp = tmp / "ddp"
    launch("multi_gpu.yaml", 2, ddp, common, "--run.batch_size", "4")  # trains the tokenizer the others reuse
    common += ["--tokenizer.path", str(ddp / "tokenizer")]
    fsdp = tmp / "fsdp"
    out = launch("fsdp.yaml", 2, fsdp, common, "--run.batch_size", "4").stdout
    killed = tmp / "killed"  # dies right after step 4's optimizer step: step_3 is its last checkpoint
    launch("fsdp.yaml", 2, killed, common, "--run.batch_size", "4", expect=1,
           env={"PRETRAIN_FAULT": "step:exit=1", "PRETRAIN_FAULT_STEP": "4"})
    assert not (killed / "final").exists()
    resharded = tmp / "resharded"
    shutil.copytree(killed, resharded)
    launch("fsdp.yaml", 2, killed, common, "--run.batch_size", "4", "--resume")
    launch("fsdp.yaml", 1, resharded, common, "--run.batch_size", "8", "--resume")
    return dict(tmp=tmp, common=common, ddp=ddp, fsdp=fsdp, killed=killed, resharded=resharded, fsdp_out=out)


def test_fsdp_trains_sharded_like_data_parallel(runs):
    fsdp, ddp = runs["fsdp"], runs["ddp"]
    assert "2 process(es) on cpu (FSDP)" in runs["fsdp_out"]
    step = fsdp / "checkpoints" / "step_3"
    shards = sorted(p.name for p in (step / "pytorch_model_fsdp_0").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # really sharded, one file per process
    assert not (step / "model.safetensors").exists()
    assert_same_losses(fsdp, ddp, 1e-5)
    for a, b in ((weights(fsdp / "final"), weights(ddp / "final")),
                 (weights(step), load_file(ddp / "checkpoints/step_3/model.safetensors"))):
        assert sorted(a) == sorted(b)
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)


def test_killed_fsdp_run_resumes_exactly(runs):
    assert_same_losses(runs["killed"], runs["fsdp"], 1e-7)
    a, b = weights(runs["killed"] / "final"), weights(runs["fsdp"] / "final")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_fsdp_checkpoint_resumes_with_another_number_of_processes(runs):
    assert_same_losses(runs["resharded"], runs["fsdp"], 1e-5)
    a, b = weights(runs["resharded"] / "final"), weights(runs["fsdp"] / "final")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)


def test_fsdp_final_model_and_checkpoint_export_with_logits_parity(runs, tmp_path):
    from transformers import GPT2LMHeadModel

    from pretrain.export.to_hf import export_run
    from pretrain.train.saved_run import load_run_model
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    for checkpoint in (None, "step_3"):
        out = tmp_path / f"hf_{checkpoint}"
        export_run(runs["fsdp"], out, checkpoint, log=lambda *_: None)
        ours, *_ = load_run_model(runs["fsdp"], checkpoint)
        theirs = GPT2LMHeadModel.from_pretrained(out).eval()
        with torch.no_grad():
            diff = (ours.logits(ours(ids)) - theirs(ids).logits).abs().max().item()
        assert diff < 1e-4, (checkpoint, diff)


def test_resuming_across_engines_is_refused_in_one_line(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs["ddp"], other)
    shutil.rmtree(other / "final")
    proc = launch("fsdp.yaml", 2, other, runs["common"], "--run.batch_size", "4", "--resume", expect=1)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines and "was saved without FSDP and this run is launched under FSDP" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr.split("error:")[0][-3000:]


def test_fsdp_with_activation_checkpointing_and_compile(runs, tmp_path):
    out = tmp_path / "ac_compile"
    log = launch("fsdp.yaml", 2, out, runs["common"], "--run.batch_size", "4", "--run.max_steps", "2",
                 "--run.save_every", "2", "--run.activation_checkpointing", "true", "--run.compile", "true").stdout
    assert "(FSDP)" in log
    got, want = train_rows(out), train_rows(runs["fsdp"])
    assert sorted(got) == [1, 2]
    for step in got:  # the same steps as the plain FSDP run (warmup: the learning rate ignores max_steps)
        assert abs(got[step]["loss"] - want[step]["loss"]) < 1e-4, (step, got[step]["loss"], want[step]["loss"])
    assert (out / "final" / "model.safetensors").is_file()
