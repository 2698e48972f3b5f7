"""The same comparison in two fresh processes (different PYTHONHASHSEEDs) writes the same results.json: every
loss, accuracy, pair score, probe and fine-tuning number and every verdict, bit for bit in fp32 on CPU. Only what a
clock measures (wall time, tokens/s, MFU, the elapsed time of each evaluation) and the output directory's own path
may differ."""
import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CLOCK_KEYS = {"wall_time_s", "tokens_per_s", "mfu", "elapsed"}
CLOCK_COLUMNS = {"wall time", "tokens/s", "MFU"}


def without_clock(value, work: str):
    """results.json with the measurements of time removed and the working directory written as WORK."""
    if isinstance(value, dict):
        if set(value) == {"headers", "rows"}:  # a table: drop the clock's columns
            keep = [i for i, h in enumerate(value["headers"]) if h not in CLOCK_COLUMNS]
            return {"headers": [value["headers"][i] for i in keep],
                    "rows": [[without_clock(row[i], work) for i in keep] for row in value["rows"]]}
        return {k: without_clock(v, work) for k, v in value.items() if k not in CLOCK_KEYS}
    if isinstance(value, list):
        return [without_clock(v, work) for v in value]
    if isinstance(value, str):
        return value.replace(work, "WORK")
    return value


def test_same_comparison_same_results_in_fresh_processes(tmp_path):
    procs = []
    for i in (1, 2):
        env = {**os.environ, "PYTHONHASHSEED": str(i), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_CACHE": str(tmp_path / f"hf{i}"),
               "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, str(TESTS / "compare_reproduce_worker.py"),
                                       str(tmp_path / f"w{i}")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out = p.communicate(timeout=400)[0]
        assert p.returncode == 0, out[-3000:]
    first, second = (without_clock(json.loads((tmp_path / f"w{i}" / "cmp" / "results.json").read_text()),
                                   str(tmp_path / f"w{i}")) for i in (1, 2))
    assert first["runs"] and first["pairs"]["runs"] and first["downstream"]["rows"]
    assert first == second
