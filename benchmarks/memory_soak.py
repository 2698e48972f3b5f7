"""Does memory grow over a long run? Peak RSS of a tiny training run after 200 steps and after 2,000 steps.

    python benchmarks/memory_soak.py [--short 200] [--long 2000]

One `pretrain train` process (fp32, CPU, tiny BERT, eval and checkpoints every 100 steps, metrics.jsonl every step)
records its peak RSS (resource.getrusage ru_maxrss) and current RSS after step 200 and after step 2,000. Target: the
peak after 2,000 steps within 5% of the peak after 200 -- a leak of a few KB per step shows over 1,800 steps.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = """
import os, resource, sys
from pretrain.cli import main
from pretrain.train.trainer import Trainer
MARKS = {int(m) for m in sys.argv[1].split(",")}
step = Trainer.train_step

def measured(self):
    row = step(self)
    if self.step in MARKS:
        current = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        print(f"RSS {self.step} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} {current}", flush=True)
    return row

Trainer.train_step = measured
sys.exit(main(sys.argv[2:]))
"""


def rss_at(work: Path, corpus: Path, marks: list[int]) -> dict[int, tuple[int, int]]:
    """{step: (peak RSS KB, current RSS KB)} of one run of max(marks) steps."""
    from train_fixtures import tiny_flags

    argv = ["train", *tiny_flags(work / "run", corpus, steps=max(marks),
                                 **{"run.save_every": 100, "run.eval_every": 100, "run.keep_last": 2,
                                    "run.mixed_precision": "no", "run.sample": "false", "optim.warmup_steps": 20})]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", CHILD, ",".join(map(str, marks)), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RSS "):
            _, step, peak, current = line.split()
            out[int(step)] = (int(peak), int(current))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=200)
    parser.add_argument("--long", type=int, default=2000)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    from train_fixtures import write_corpus

    work = Path(args.work or tempfile.mkdtemp(prefix="memory-soak-"))
    corpus = write_corpus(work / "data", n_paragraphs=300)
    marks = sorted({args.short, args.long})
    rss = rss_at(work, corpus, marks)
    for step in marks:
        print(f"after step {step:5d}: peak RSS {rss[step][0] / 1024:.1f} MiB, current RSS {rss[step][1] / 1024:.1f} MiB")
    growth = rss[args.long][0] / rss[args.short][0] - 1
    ok = growth <= 0.05
    print(f"peak RSS growth from step {args.short} to {args.long}: {growth:+.2%} (target: at most +5%) -> "
          f"{'OK' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
