"""Multi-node training simulated on one machine (issue 20): two `torchrun --nnodes 2 --nproc_per_node 1` agents
("nodes") meet through a c10d rendezvous on 127.0.0.1, each with node-local caches (its own run.cache_dir and
HF_HOME) over one shared run directory, through the real entry point (`pretrain train`, CLM on a tiny GPT-2, fp32).

The launch script, tests/rank_write_guard.py, records every Python-level write a process of global rank > 0
attempts under the run directory; files written by native code (safetensors, torch.save) are caught by comparing
the run directory's file list with a one-process run's.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from train_fixtures import write_corpus

REPO = Path(__file__).resolve().parents[1]
GUARD = Path(__file__).with_name("rank_write_guard.py")
pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(home: Path) -> dict:
    """A node's environment: its own Hugging Face home (datasets cache), offline, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "PRETRAIN_FAULT", "WANDB"))}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(home / "hf"),
                "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def flags(corpus: Path, run: Path, cache: Path, batch_size: int, steps: int, **extra) -> list[str]:
    out = {"--data.files": str(corpus), "--model.preset": "gpt2", "--objective.name": "clm",
           "--tokenizer.kind": "bpe", "--tokenizer.vocab_size": "300", "--model.d_model": "32",
           "--model.n_layers": "1", "--model.n_heads": "2", "--model.d_ff": "64", "--model.max_seq_len": "64",
           "--model.dropout": "0.0", "--run.seq_len": "16", "--run.batch_size": str(batch_size),
           "--run.max_steps": str(steps), "--run.eval_every": "2", "--run.save_every": "2",
           "--run.eval_batches": "1", "--run.progress": "false", "--run.sample": "false",
           "--run.mixed_precision": "no", "--optim.warmup_steps": "0", "--optim.lr": "3e-3",
           "--run.output_dir": str(run), "--run.cache_dir": str(cache)}
    out.update({f"--{k}": str(v) for k, v in extra.items()})
    return [x for kv in out.items() for x in kv]


def two_nodes(tmp: Path, corpus: Path, run: Path, steps: int, **extra) -> list[subprocess.Popen]:
    """Node 0 (it hosts the rendezvous store), then node 1, each a torchrun agent."""
    port, procs = free_port(), []
    for node in (0, 1):
        home = tmp / f"node{node}"
        cmd = ["torchrun", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint",
               f"127.0.0.1:{port}", "--rdzv_id", "multinode-test", "--rdzv_conf", "join_timeout=120",
               "--node_rank", str(node), str(GUARD), str(tmp / "rank_writes.log"), str(run), "train",
               *flags(corpus, run, home / "cache", 4, steps, **extra)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env_for(home), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        time.sleep(0.5)  # node 0 binds the rendezvous port first
    return procs


def node_processes(agent: subprocess.Popen) -> list[psutil.Process]:
    """A node's agent and its workers (torchrun starts each worker in a session of its own)."""
    try:
        root = psutil.Process(agent.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_node(agent: subprocess.Popen, sig: int):
    for proc in node_processes(agent):
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def stop_all(procs: list[subprocess.Popen]):
    for p in procs:
        for proc in node_processes(p):
            try:
                proc.kill()
                proc.resume()
            except psutil.NoSuchProcess:
                pass
        p.communicate()


def files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def train_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def cache_contents(cache: Path) -> list[dict]:
    """Per packed-block directory of a cache: file name -> sha256 of its bytes."""
    return sorted(({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in d.iterdir()}
                   for d in cache.glob("blocks-*")), key=lambda d: sorted(d.items()))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("multinode-data"), n_paragraphs=150)


def test_two_nodes_match_one_process_with_double_batch_and_only_rank_0_writes(tmp_path, corpus):
    two, one = tmp_path / "two" / "run", tmp_path / "one" / "run"
    procs = two_nodes(tmp_path / "two", corpus, two, steps=4)
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        stop_all(procs)
    assert [p.returncode for p in procs] == [0, 0], [o[1][-3000:] for o in outputs]
    assert any("2 process(es) on cpu" in out for out, _ in outputs)  # one process per node, one group

    # the reference: one process, twice the batch, the tokenizer the two-node run made (training one again is
    # not deterministic); its own cache
    ref = subprocess.run([sys.executable, "-m", "pretrain.cli", "train",
                          *flags(corpus, one, tmp_path / "one" / "cache", 8, 4,
                                 **{"tokenizer.path": two / "tokenizer"})],
                         cwd=REPO, env=env_for(tmp_path / "one"), capture_output=True, text=True, timeout=240)
    assert ref.returncode == 0, ref.stderr[-3000:]

    a, b = load_file(two / "final" / "model.safetensors"), load_file(one / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-4, name
    losses_two, losses_one = train_losses(two), train_losses(one)
    assert len(losses_two) == 4
    for x, y in zip(losses_two, losses_one, strict=True):
        assert abs(x - y) < 1e-5

    # only global rank 0 wrote the run directory
    log = tmp_path / "two" / "rank_writes.log"
    assert not log.exists(), log.read_text()[:2000]
    assert files(two) == files(one)

    # each node built its own cache (keys differ: a dataset's fingerprint names its node's cache) from the one
    # tokenizer: the same blocks, byte for byte
    built = [cache_contents(tmp_path / "two" / f"node{n}" / "cache") for n in (0, 1)]
    assert len(built[0]) == 2 and built[0] == built[1]  # training and validation blocks

def test_a_node_that_loses_its_peer_exits_within_the_timeout_with_one_line(tmp_path, corpus):
    """Node 1 (agent and worker) is frozen mid-run, as a node cut off the network: its sockets stay open, so only
    run.dist_timeout ends node 0's wait. Node 0 must exit non-zero within the timeout plus a margin, its worker
    printing one error line that names the problem and the fix."""
    timeout_s = 5
    run = tmp_path / "run"
    procs = two_nodes(tmp_path, corpus, run, steps=100000, **{"run.eval_every": 100000, "run.save_every": 100000,
                                                              "run.dist_timeout": timeout_s})
    metrics = run / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 180
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
            assert procs[0].poll() is None and procs[1].poll() is None, procs[0].communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the two nodes did not start training"
            time.sleep(0.05)
        signal_node(procs[1], signal.SIGSTOP)
        t = time.monotonic()
        try:
            _, err = procs[0].communicate(timeout=timeout_s + 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"node 0 still running {timeout_s + 60}s after its peer froze")
        waited = time.monotonic() - t
    finally:
        stop_all(procs)
    assert procs[0].returncode not in (0, None)
    assert waited < timeout_s + 20, waited
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    assert "lost contact" in errors[0] and "--resume" in errors[0] and "run.dist_timeout" in errors[0], errors[0]
    assert "pretrain/train" not in err, err[-3000:]  # no traceback through our code
