"""The same command in a fresh process gives a byte-identical tokenizer and bit-identical fp32 weights, for every
recipe and tokenizer kind (docs/reproducibility.md). Two fresh processes, with different PYTHONHASHSEEDs so a
dependence on Python's hash order shows, each train every recipe (tests/reproduce_worker.py) on a made-up corpus
of pseudo-words whose frequencies tie often (so a trainer that breaks ties by hash order shows it too)."""
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

from reproduce_worker import RUNS

TESTS = Path(__file__).resolve().parent
SYLLABLES = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "ve", "zu", "an", "el", "or", "ix", "um", "qu"]


def write_pseudo_corpus(path: Path, n_paragraphs: int = 120, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = sorted({"".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(600)})
    lines = [" ".join(rng.choice(words).capitalize() if i == 0 else rng.choice(words)
                      for i in range(rng.randint(8, 30))) + "." for _ in range(n_paragraphs)]
    path.write_text("\n\n".join(lines) + "\n")
    return path


def test_same_command_same_tokenizer_and_weights_for_every_recipe(tmp_path):
    """One test (not one per recipe) so that `pytest -n 2` runs the two processes once, not once per worker."""
    corpus = write_pseudo_corpus(tmp_path / "corpus.txt")
    procs = []
    for i in (1, 2):
        env = {**os.environ, "PYTHONHASHSEED": str(i), "OMP_NUM_THREADS": "1",
               "HF_DATASETS_CACHE": str(tmp_path / f"hf{i}"),
               "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, str(TESTS / "reproduce_worker.py"), str(corpus),
                                       str(tmp_path / f"out{i}")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out = p.communicate(timeout=300)[0]
        assert p.returncode == 0, out[-3000:]
    differ = [f"{name}/{file}" for name in RUNS
              for file in ("tokenizer/tokenizer.json", "final/tokenizer.json", "final/model.safetensors")
              if (tmp_path / "out1" / name / file).read_bytes() != (tmp_path / "out2" / name / file).read_bytes()]
    assert differ == [], f"differ between two fresh processes: {differ}"


def test_run_deterministic_applies_torch_settings(tmp_path, monkeypatch):
    """--run.deterministic true turns on torch's deterministic kernels and the cuBLAS workspace they need; the
    default leaves torch as it was."""
    from pretrain.train.build import make_accelerator
    from pretrain.train.config import parse_config

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        make_accelerator(parse_config(["--run.mixed_precision", "no"]), tmp_path, None)
        assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        make_accelerator(parse_config(["--run.mixed_precision", "no", "--run.deterministic", "true"]), tmp_path, None)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before)
