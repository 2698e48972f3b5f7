"""Kill a training run again and again -- at random moments, in the middle of writing a checkpoint, during start-up
-- resume it each time, let it finish, and compare with a run that was never interrupted.

    python benchmarks/chaos.py [--kills 10] [--steps 60] [--seed 0] [--work DIR]

A tiny fp32 BERT on CPU, one process, dropout on (so the RNG state must be restored too). After every kill it checks
that the newest complete checkpoint loads (weights, optimizer, trainer state) and that no half-written one
(.tmp-step_N) would be picked. At the end the final parameters (final/model.safetensors) and the logged curve
(metrics.jsonl: every train and val row, without the wall-clock fields) must equal the uninterrupted run's exactly.
Prints how many kills and resumes were survived with identical results. tests/test_reliability.py runs the same
with fewer kills.

Kill moments, in turn: "save" (PRETRAIN_FAULT=save:sleep holds a checkpoint between its files and its rename; the
process is killed there), "sigterm" and "sigint" (at a random step, what a scheduler / Ctrl-C sends: the run must
stop after that step with a checkpoint of it and exit 75, resumable), "step" (SIGKILL once metrics.jsonl reaches a
random step), "startup" (SIGKILL a random time after launch, within the uninterrupted run's start-up: import,
tokenizer, packing, resume). For the three step kinds PRETRAIN_FAULT=step:sleep holds the step after the chosen one,
so the signal lands in that step however late this process sees the log, never after the run has ended.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WALL_CLOCK = {"tokens_per_s", "mfu", "elapsed"}
KINDS = ("save", "sigterm", "step", "sigint", "startup", "step")
STOPPED = 75  # the exit status of a run that stopped on request with a checkpoint
HOLD_S = 3.0  # how long the step after a chosen step is held for its signal to land in


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRETRAIN_FAULT")}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    return env


def flags(work: Path, corpus: Path, name: str, steps: int, **extra) -> list[str]:
    from train_fixtures import tiny_flags

    return ["train", *tiny_flags(work / name, corpus, steps=steps,
                                 **{"run.save_every": 5, "run.eval_every": 10, "run.keep_last": 2,
                                    "run.mixed_precision": "no", "run.sample": "false", "model.dropout": 0.1,
                                    **extra}),
            "--resume"]  # --resume on an empty directory starts from step 0


def launch(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "pretrain.cli", *argv], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def logged_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    step = 0
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                step = max(step, json.loads(line).get("step", 0))
            except (json.JSONDecodeError, AttributeError):
                pass
    return step


def curve(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


def check_latest_loadable(run: Path) -> int | None:
    """The checkpoint a resume would pick: complete, loadable, never a .tmp one. Returns its step."""
    import torch
    from safetensors.torch import load_file

    from pretrain.train.run_dir import RunDir

    latest = RunDir(run).latest_checkpoint()
    if latest is None:
        return None
    assert latest.name.startswith("step_"), latest
    state = json.loads((latest / "trainer_state.json").read_text())
    weights = load_file(latest / "model.safetensors")
    assert weights and all(bool(torch.isfinite(t).all()) for t in weights.values())
    torch.load(latest / "optimizer.bin", weights_only=True)
    assert state["step"] == int(latest.name.split("_")[1])
    return state["step"]


def stopped(proc: subprocess.Popen, run: Path, log: Path, signum) -> str:
    """Send the signal to the run's process group; it must exit 75 with a checkpoint of the step it stopped at."""
    os.killpg(proc.pid, signum)
    code = proc.wait(timeout=120)
    if code == 0 and (run / "final").is_dir():  # the request landed in the last step: the run simply finished
        return "finished"
    if code != STOPPED:
        raise RuntimeError(f"{signal.Signals(signum).name}: exit {code}, not {STOPPED}; see {log}")
    latest = check_latest_loadable(run)
    trained = max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines())
    if latest != trained:
        raise RuntimeError(f"stopped after step {trained} but the newest checkpoint is step {latest}; see {log}")
    if "--resume" not in log.read_text(errors="replace").splitlines()[-1]:
        raise RuntimeError(f"the last line does not say how to continue; see {log}")
    return f"stopped-{signal.Signals(signum).name.lower()}"


def kill_group(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def one_attempt(argv, env, run: Path, log: Path, kind: str, steps: int, rng: random.Random,
                startup: float = 6.0, timeout: float = 240) -> str:
    """Run until killed per `kind` (returns "killed-<kind>") or until the run ends by itself ("finished")."""
    env = dict(env)
    target_step = None
    if kind == "save":
        env["PRETRAIN_FAULT"] = "save:sleep=120"
    elif kind in ("step", "sigterm", "sigint"):
        # the signal lands in step target+1 (held); a stop request there needs one more step before the last
        last = steps - 3 if kind in ("sigterm", "sigint") else steps - 1
        target_step = rng.randint(logged_step(run) + 1, last)
        env.update({"PRETRAIN_FAULT": f"step:sleep={HOLD_S}", "PRETRAIN_FAULT_STEP": str(target_step + 1)})
    delay = rng.uniform(0.2, 1.0) * startup if kind == "startup" else None
    proc = launch(argv, env, log)
    start = time.monotonic()
    try:
        while proc.poll() is None:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"attempt ({kind}) did not end within {timeout}s; see {log}")
            if kind == "save" and any((tmp / "trainer_state.json").is_file()
                                      for tmp in (run / "checkpoints").glob(".tmp-step_*")):
                kill_group(proc)  # files written, not yet renamed
                return "killed-save"
            if kind == "step" and logged_step(run) >= target_step:
                time.sleep(rng.uniform(0, 0.02))
                kill_group(proc)
                return "killed-step"
            if kind in ("sigterm", "sigint") and logged_step(run) >= target_step:
                time.sleep(rng.uniform(0, 0.02))
                return stopped(proc, run, log, signal.SIGTERM if kind == "sigterm" else signal.SIGINT)
            if kind == "startup" and time.monotonic() - start >= delay:
                kill_group(proc)
                return "killed-startup"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"the run failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return "finished"


def straight_run(argv: list[str], env: dict, run: Path, log: Path) -> float:
    """The uninterrupted run; returns its start-up time (launch to the first logged step)."""
    proc = launch(argv, env, log)
    start, startup = time.monotonic(), None
    while proc.poll() is None:
        if startup is None and logged_step(run) >= 1:
            startup = time.monotonic() - start
        if time.monotonic() - start > 300:
            kill_group(proc)
            raise TimeoutError(f"the uninterrupted run did not end within 300s; see {log}")
        time.sleep(0.01)
    if proc.returncode != 0 or startup is None:
        raise RuntimeError(f"uninterrupted run failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    return startup


def chaos(work: Path, kills: int = 10, steps: int = 60, seed: int = 0, verbose: bool = True) -> dict:
    """Returns {"kills": n, "resumes": n, "identical": bool, "kinds": {...}, "seconds": s}."""
    import torch
    from safetensors.torch import load_file

    from train_fixtures import write_corpus

    t0 = time.monotonic()
    work = Path(work)
    corpus = write_corpus(work / "data")
    env, rng = base_env(), random.Random(seed)
    say = print if verbose else (lambda *a, **k: None)

    straight = work / "straight" / "run"
    startup = straight_run(flags(work, corpus, "straight", steps), env, straight, work / "straight.log")

    run, log = work / "chaos" / "run", work / "chaos.log"
    # the uninterrupted run's tokenizer: `tokenizers`' WordPiece trainer breaks frequency ties in hash order, so two
    # processes may train different vocabularies from the same text (a resumed run always reuses its own)
    argv = flags(work, corpus, "chaos", steps, **{"tokenizer.path": str(straight / "tokenizer")})
    done, kinds, i = 0, {}, 0
    while done < kills:
        kind = KINDS[i % len(KINDS)]
        i += 1
        if kind in ("step", "sigterm", "sigint") and logged_step(run) >= steps - 3:
            kind = "startup"  # no step left to reach: kill during start-up / resume instead
        outcome = one_attempt(argv, env, run, log, kind, steps, rng, startup=startup)
        if outcome == "finished":  # the run ended before this kill: nothing left to interrupt
            say(f"attempt {i}: finished before the '{kind}' kill")
            break
        done += 1
        kinds[kind] = kinds.get(kind, 0) + 1
        latest = check_latest_loadable(run)
        say(f"kill {done} ({kind}): logged up to step {logged_step(run)}, newest complete checkpoint: "
            f"{'step_' + str(latest) if latest is not None else 'none'}", flush=True)
    if not (run / "final").is_dir() or logged_step(run) < steps:
        outcome = one_attempt(argv, env, run, log, "finish", steps, rng)
        assert outcome == "finished"
    resumes = log.read_text(errors="replace").count("resumed from")

    a, b = load_file(straight / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    same_params = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    same_curve = curve(straight) == curve(run)
    return {"kills": done, "resumes": resumes, "kinds": kinds, "identical": same_params and same_curve,
            "same_params": same_params, "same_curve": same_curve, "seconds": time.monotonic() - t0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="chaos-"))
    result = chaos(work, args.kills, args.steps, args.seed)
    print(json.dumps(result, indent=2))
    print(f"\n{result['kills']} kills and stops ({', '.join(f'{n} {k}' for k, n in result['kinds'].items())}), "
          f"{result['resumes']} resumes: final parameters {'identical' if result['same_params'] else 'DIFFERENT'}, "
          f"loss curve {'identical' if result['same_curve'] else 'DIFFERENT'} to the uninterrupted run "
          f"({result['seconds']:.0f}s)")
    sys.exit(0 if result["identical"] else 1)


if __name__ == "__main__":
    main()
