"""Data at scale: `prepare` (tokenizer + memory-mapped token cache) on generated corpora of growing size.

    python benchmarks/data_pipeline.py --scale [--sizes 50,200,1000] [--source PATH] [--workers 1,2]

Each corpus repeats the source text (default ../shared/data/tinyshakespeare.txt) until it reaches the size, so
the tokenizer sees a realistic vocabulary and the token count grows linearly. For every size it runs the main
recipe's `prepare` (recipes/bert_mlm.py prepare: WordPiece 8000, blocks of 128) once per worker count, then a
training run on the prepared cache, and prints: wall time, tokens/s of the tokenizing phase, peak memory of the
whole process tree (PSS: the workers included, shared pages counted once; sampled every 50 ms), the cache's size
on disk, and the time from launching the run to its first training step. The first prepare of a size also trains the tokenizer (its wall
time includes that); the next ones reuse it, so the worker counts compare the tokenizing phase alone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "bert_mlm.py"


def make_corpus(source: Path, megabytes: int, path: Path) -> int:
    """Repeat the source's text until the file holds `megabytes` MB; its size in bytes."""
    text = source.read_text().strip() + "\n\n"
    target = megabytes * 10**6
    with open(path, "w") as f:
        written = 0
        while written < target:
            f.write(text)
            written += len(text.encode())
    return path.stat().st_size


def tree_pss_mb(pid: int) -> tuple[float, float]:
    """(PSS, anonymous PSS) of a process and all its descendants (MB). PSS counts a page shared by forked workers
    once, where RSS would count it per process; it includes the mapped pages of the corpus and cache files (page
    cache the kernel can drop), which the anonymous part does not: that part is what must fit in memory."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, anon, stack = 0, 0, [pid]
    while stack:
        p = stack.pop()
        stack += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                elif line.startswith("Pss_Anon:"):
                    anon += int(line.split()[1])
        except OSError:
            pass
    return total / 1024, anon / 1024


def monitored(cmd: list[str], until=None) -> tuple[float, tuple[float, float], str]:
    """(wall seconds, (peak PSS, peak anonymous PSS) of the process tree in MB, output) of a command; `until()`
    ends the wait early (the process is then stopped) and the wall time is when it first held."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = tempfile.TemporaryFile(mode="w+")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    peak, peak_anon, wall = 0.0, 0.0, None
    while proc.poll() is None:
        pss, anon = tree_pss_mb(proc.pid)
        peak, peak_anon = max(peak, pss), max(peak_anon, anon)
        if until is not None and until():
            wall = time.perf_counter() - start
            proc.terminate()
            proc.wait()
            break
        time.sleep(0.05)
    wall = wall if wall is not None else time.perf_counter() - start
    out.seek(0)
    text = out.read()
    if proc.returncode not in (0, -15) and until is None:
        sys.exit(f"{' '.join(cmd[:3])} failed:\n{text[-3000:]}")
    return wall, (peak, peak_anon), text


def directory_mb(paths) -> float:
    return sum(f.stat().st_size for p in paths for f in Path(p).rglob("*") if f.is_file()) / 1e6


def scale_main(args):
    source = Path(args.source)
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")] if args.workers else [os.cpu_count() or 1, 1]
    work = Path(tempfile.mkdtemp(prefix="data_scale-"))
    print(f"source {source} repeated; recipe {RECIPE.name} prepare; {os.cpu_count()} cores; work dir {work}")
    print(f"{'corpus':>8} {'workers':>7} {'wall s':>8} {'tokenize s':>10} {'tokens':>13} {'tokens/s':>11} "
          f"{'peak MB':>8} {'anon MB':>8} {'cache MB':>9} {'first step s':>12}")
    try:
        for mb in sizes:
            corpus, cache = work / f"corpus_{mb}MB.txt", work / f"cache_{mb}"
            make_corpus(source, mb, corpus)
            data = ["--data.files", json.dumps([str(corpus)]), "--run.cache_dir", str(cache)]
            for n in workers:
                for old in cache.glob("blocks-*"):
                    shutil.rmtree(old)  # keep the tokenizer: every worker count tokenizes from scratch
                wall, peak, log = monitored([sys.executable, str(RECIPE), "prepare", *data,
                                             "--data.num_proc", str(n)])
                found = re.search(r"\(([\d,]+) tokens; tokenized in ([\d.]+) s, ([\d,]+) tokens/s\)", log)
                if not found:
                    sys.exit(f"no 'prepared:' line in the output of prepare:\n{log[-3000:]}")
                tokens, seconds, speed = found.group(1), float(found.group(2)), found.group(3)
                cache_mb = directory_mb(cache.glob("blocks-*"))
                first = ""
                if n == workers[-1]:
                    first = f"{time_to_first_step(data, work / f'run_{mb}'):.1f}"
                print(f"{mb:>6}MB {n:>7} {wall:>8.1f} {seconds:>10.1f} {tokens:>13} {speed:>11} {peak[0]:>8.0f} "
                      f"{peak[1]:>8.0f} {cache_mb:>9.0f} {first:>12}", flush=True)
            corpus.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def time_to_first_step(data: list[str], run: Path) -> float:
    """Seconds from launching a training run on the prepared cache to its first optimizer step (the first
    "train" row of metrics.jsonl)."""
    metrics = run / "metrics.jsonl"

    def stepped():
        return metrics.is_file() and '"split": "train"' in metrics.read_text()

    wall, _, _ = monitored([sys.executable, str(RECIPE), *data, "--run.output_dir", str(run), "--run.max_steps",
                            "5", "--run.eval_every", "1000", "--run.progress", "false", "--run.sample", "false",
                            "--run.overwrite", "true"], until=stepped)
    return wall
