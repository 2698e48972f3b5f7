"""The bad-input matrix (issue 9): the `pretrain` CLI, run as a user runs it (a subprocess), on each of 25+ bad
inputs. Every case must exit non-zero (2 for usage / configuration errors), print exactly one line on stderr --
`error: ...` naming the problem and the fix -- show no Python traceback anywhere, change no existing file and
create none (no run directory, no config.yaml, no cache); then the corrected command runs, in the same place.

The cases run concurrently (each is a separate `python -m pretrain.cli` process) from one module fixture; the
parametrized test then checks each case's outcome. Three tiny finished runs are shared by the cases that need one
(a BERT, a GPT-2 and a BERT with another vocabulary) plus one whose architecture no transformers family matches.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from train_fixtures import tiny_flags, write_corpus

REPO = Path(__file__).resolve().parents[1]
# a progress bar of work done before the error (tqdm: "Saving the dataset: 100%|####| 8/8 [00:00<00:00, ...]")
PROGRESS = re.compile(r"\d+%\|.*\| *[\d.]+[kM]?/[\d.?]+[kM]? \[")


def cli_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(home / "hf-home"),
                "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline",
                "PYTHONWARNINGS": "ignore"})
    return env


def pretrain(args: list[str], env: dict, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    """`python -m pretrain.cli ARGS`, exactly as a user runs it."""
    return subprocess.run([sys.executable, "-m", "pretrain.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---- many CLI runs at the price of one interpreter start -------------------------------------------------------
# Starting Python and importing torch / transformers / datasets costs ~2.5 s of CPU per process; 35 cases would
# spend most of the test's time on imports. serve() imports once, then forks one child per case; the child does
# what `python -m pretrain.cli ARGS` does after its imports -- sys.exit(pretrain.cli.main(ARGS)) -- with its own
# stdout / stderr files, and an uncaught exception prints its traceback to stderr and exits 1, as the interpreter
# would. test_forked_runs_match_real_processes checks the equivalence on a few cases.
def serve(jobs_file: str, parallel: str = "3"):
    import json
    import traceback

    import accelerate  # noqa: F401  the heavy imports, shared by every child
    import datasets  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import pretrain.cli
    import pretrain.export.command  # noqa: F401
    import pretrain.train.main  # noqa: F401

    jobs = json.loads(Path(jobs_file).read_text())
    running, results, pending = {}, {}, list(enumerate(jobs))
    while pending or running:
        while pending and len(running) < int(parallel):
            i, job = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.chdir(job["cwd"])
                    for fd, name in ((1, "stdout"), (2, "stderr")):
                        out = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                        os.dup2(out, fd)
                        os.close(out)
                    sys.argv = ["pretrain", *job["argv"]]
                    try:
                        code = pretrain.cli.main(job["argv"])
                    except SystemExit as e:
                        code = e.code
                    if code is None:
                        code = 0
                    elif not isinstance(code, int):
                        print(code, file=sys.stderr)
                        code = 1
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            running[pid] = (i, time.perf_counter())
        pid, status = os.wait()
        i, t0 = running.pop(pid)
        results[i] = {"returncode": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - t0}
    Path(jobs_file).with_suffix(".out.json").write_text(json.dumps([results[i] for i in range(len(jobs))]))


def pretrain_many(jobs: list[tuple[list[str], Path]], env: dict, work: Path, parallel: int = 3):
    """[(argv, cwd)] -> [CompletedProcess], run by serve() in one server process."""
    import json

    work.mkdir(parents=True, exist_ok=True)
    specs = [{"argv": argv, "cwd": str(cwd), "stdout": str(work / f"{i}.out"), "stderr": str(work / f"{i}.err")}
             for i, (argv, cwd) in enumerate(jobs)]
    jobs_file = work / "jobs.json"
    jobs_file.write_text(json.dumps(specs))
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_bad_input as t; " \
           f"t.serve({str(jobs_file)!r}, {str(parallel)!r})"
    server = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert server.returncode == 0, server.stderr[-3000:]
    results = json.loads(jobs_file.with_suffix(".out.json").read_text())
    return [subprocess.CompletedProcess(spec["argv"], r["returncode"], Path(spec["stdout"]).read_text(),
                                        Path(spec["stderr"]).read_text()) for spec, r in zip(specs, results)]


def snapshot(*roots: Path) -> dict:
    """path -> (sha256, size, mtime_ns) of every file under roots, and "dir" for every directory."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_dir() and not path.is_symlink():
                out[str(path)] = "dir"
            elif path.is_file() and not path.is_symlink():
                st = path.stat()
                out[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    return dst


def swap_checkpoints(run: Path, donor: Path):
    """Replace run's checkpoints with another run's (a checkpoint from a different model on --resume)."""
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(donor / "checkpoints", run / "checkpoints", copy_function=shutil.copy2)


@dataclass
class Case:
    name: str
    setup: object  # (world, case_dir) -> argv
    problem: tuple  # substrings (lower case) the error line must contain: the problem
    fix: tuple  # substrings, at least one of which must appear: the fix
    code: int | None = 2  # expected exit status; None = any non-zero
    fixed: object = None  # (world, case_dir) -> the corrected argv (doing what the fix says); None: train_argv


def train_argv(world, d: Path, **extra) -> list[str]:
    # a stated peak FLOP rate: no matmul probe (a second per run) for MFU
    return ["train", *tiny_flags(d, world.corpus, steps=2, **{"run.sample": "false", "run.peak_flops": "1e12",
                                                                 **extra})]


def export_bert(w, d):
    return ["export", str(w.bert), "--out", str(d / "hf")]


def delete_newest_checkpoint_and_resume(w, d):
    """What the error says: delete that directory to resume from an older checkpoint."""
    shutil.rmtree(d / "run" / "checkpoints" / "step_2")
    return ["train", "--run.output_dir", str(d / "run"), "--resume"]


def existing_run(w, d):
    return train_argv(w, d, **{"run.output_dir": str(copy_run(w.bert, d / "run"))})


def write(d: Path, name: str, data) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _glob_with_binary(d: Path) -> Path:
    """30 text files and, among them, one binary file: the glob that holds them."""
    for i in range(30):
        write(d / "corpus", f"c{i:02d}.txt", bytes(range(256)) * 64 if i == 17 else "some plain words here\n" * 20)
    return d / "corpus" / "*.txt"


def _resume_with_donor(donor_attr):
    def setup(w, d):
        run = copy_run(w.bert, d / "run")
        swap_checkpoints(run, getattr(w, donor_attr))
        return ["train", "--run.output_dir", str(run), "--resume"]
    return setup


def _checkpoint_of_other_tokenizer(w, d):
    """A checkpoint that records another tokenizer than the run's (trained tokenizers are deterministic now, so two
    tiny runs capped at the same vocabulary would share theirs): its fingerprint in trainer_state.json changed."""
    run = copy_run(w.bert, d / "run")
    state_file = run / "checkpoints" / "step_2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["tokenizer"] = "0123456789abcdef"
    state_file.write_text(json.dumps(state))
    return ["train", "--run.output_dir", str(run), "--resume"]


def _corrupt_checkpoint(w, d):
    run = copy_run(w.bert, d / "run")
    weights = run / "checkpoints" / "step_2" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated, as after a crash of the storage
    return ["train", "--run.output_dir", str(run), "--resume"]


def _garbage_checkpoint(w, d):
    run = copy_run(w.bert, d / "run")
    for f in (run / "checkpoints" / "step_2").glob("*.safetensors"):
        f.write_bytes(os.urandom(f.stat().st_size))
    return ["train", "--run.output_dir", str(run), "--resume"]


def _not_writable_out(w, d):
    blocker = write(d, "file.txt", "a regular file: nothing can be created under it, not even by root\n")
    return train_argv(w, d, **{"run.output_dir": str(blocker / "sub")})


def _export_not_writable(w, d):
    blocker = write(d, "file.txt", "a regular file\n")
    return ["export", str(w.bert), "--out", str(blocker / "sub")]


CASES = [
    # ---- the configuration / command line: usage errors, exit 2 ----
    Case("unknown_key", lambda w, d: train_argv(w, d) + ["--model.no_such_key", "1"],
         ("unknown", "model.no_such_key"), ("--help",)),
    Case("unknown_key_in_yaml",
         lambda w, d: train_argv(w, d) + ["--config", str(write(d, "c.yaml", "run:\n  no_such_key: 3\n"))],
         ("no_such_key",), ("--help", "valid keys", "remove", "check")),
    Case("malformed_yaml",
         lambda w, d: train_argv(w, d) + ["--config", str(write(d, "c.yaml", "run: [unclosed\n  seq_len: {\n"))],
         ("c.yaml",), ("fix", "check", "yaml")),
    Case("missing_config_file", lambda w, d: train_argv(w, d) + ["--config", str(d / "nope.yaml")],
         ("nope.yaml",), ("check", "path", "fix", "give")),
    Case("wrong_value_type", lambda w, d: train_argv(w, d) + ["--run.batch_size", "many"],
         ("run.batch_size", "many"), ("expected int",)),
    Case("wrong_literal", lambda w, d: train_argv(w, d) + ["--run.mixed_precision", "fp8"],
         ("run.mixed_precision", "fp8"), ("one of",)),
    Case("objective_vs_architecture", lambda w, d: train_argv(w, d) + ["--objective.name", "clm"],
         ("clm", "encoder"), ("model.preset", "objective.name")),
    Case("unknown_objective", lambda w, d: train_argv(w, d) + ["--objective.name", "xlnet"],
         ("xlnet",), ("choose one of",)),
    Case("unknown_objective_option", lambda w, d: train_argv(w, d) + ["--objective.options", '{"mask_prob": 0.2}'],
         ("mask_prob",), ("mlm_probability",),
         fixed=lambda w, d: train_argv(w, d) + ["--objective.options", '{"mlm_probability": 0.2}']),
    Case("sequence_longer_than_positions", lambda w, d: train_argv(w, d) + ["--run.seq_len", "128"],
         ("run.seq_len 128", "max_seq_len 64"), ("lower run.seq_len", "raise model.max_seq_len")),
    Case("vocab_smaller_than_special_tokens", lambda w, d: train_argv(w, d) + ["--tokenizer.vocab_size", "3"],
         ("vocab_size 3", "special"), ("raise",)),
    Case("negative_budget", lambda w, d: train_argv(w, d) + ["--run.max_steps", "-5"],
         ("run.max_steps", "-5"), ("must be positive",)),
    Case("heads_do_not_divide_width", lambda w, d: train_argv(w, d) + ["--model.n_heads", "5"],
         ("n_heads",), ("divis", "choose", "set", "use", "change", "make")),
    Case("run_dir_already_holds_a_run", existing_run, ("already holds a run",), ("--resume", "--overwrite"),
         fixed=lambda w, d: train_argv(w, d, **{"run.output_dir": str(d / "run")}) + ["--overwrite"]),
    Case("unknown_command", lambda w, d: ["frobnicate"], ("unknown command", "frobnicate"), ("choose one of",),
         fixed=lambda w, d: ["--help"]),
    # ---- the data ----
    Case("missing_corpus", lambda w, d: train_argv(w, d, **{"data.files": str(d / "nope.txt")}),
         ("nope.txt", "does not exist"), ("check the path",), None),
    Case("glob_matches_nothing", lambda w, d: train_argv(w, d, **{"data.files": str(d / "*.nothing.txt")}),
         ("matches no file",), ("check the pattern",), None),
    Case("empty_corpus", lambda w, d: train_argv(w, d, **{"data.files": str(write(d, "empty.txt", ""))}),
         ("empty.txt", "empty"), ("put text in it", "remove it"), None),
    Case("binary_corpus",
         lambda w, d: train_argv(w, d, **{"data.files": str(write(d, "blob.txt", bytes(range(256)) * 64))}),
         ("blob.txt", "binary"), ("remove it",), None),
    Case("non_utf8_corpus",
         lambda w, d: train_argv(w, d, **{"data.files": str(write(d, "latin.txt", "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e "
                                                                                    "\n".encode("latin-1") * 50))}),
         ("latin.txt", "not utf-8"), ("convert",), None),
    Case("malformed_jsonl",
         lambda w, d: train_argv(w, d, **{"data.files": str(write(d, "bad.jsonl",
                                                                  '{"text": "fine"}\n{"text": "cut\n'))}),
         ("bad.jsonl:2", "not valid json"), ("fix or remove",), None),
    Case("binary_file_deep_in_a_glob",
         lambda w, d: train_argv(w, d, **{"data.files": str(_glob_with_binary(d))}),
         ("c17.txt", "binary"), ("remove it",), None),
    Case("malformed_jsonl_line_deep_in_the_file",  # far beyond the 64 KB the first check reads
         lambda w, d: train_argv(w, d, **{"data.files": str(write(d, "deep.jsonl", '{"text": "fine words"}\n' * 5000
                                                                  + '{"text": "cut\n'))}),
         ("deep.jsonl:5001", "not valid json"), ("fix or remove",), None),
    Case("prepare_malformed_jsonl_line_deep_in_the_file",
         lambda w, d: ["prepare", *train_argv(w, d, **{"data.files": str(write(
             d, "deep.jsonl", '{"text": "fine words"}\n' * 5000 + '{"text": "cut\n'))})[1:]],
         ("deep.jsonl:5001", "not valid json"), ("fix or remove",), None,
         fixed=lambda w, d: ["prepare", *train_argv(w, d)[1:]]),
    Case("wrong_text_column",
         lambda w, d: train_argv(w, d, **{"data.files": str(write(d, "docs.jsonl",
                                                                  '{"body": "some text here"}\n' * 20))}),
         ("docs.jsonl", "'text'", "body"), ("data.text_column",), None),
    Case("hub_dataset_offline",
         lambda w, d: train_argv(w, d, **{"data.hub_dataset": "someone/no-such-dataset-xyz"}),
         ("data.hub_dataset", "no-such-dataset-xyz"), ("hf_hub_offline", "data.files"), None),
    Case("tokenizer_path_missing", lambda w, d: train_argv(w, d, **{"tokenizer.path": str(d / "no-tokenizer")}),
         ("tokenizer.path", "no-tokenizer"), ("give a folder",), None,
         fixed=lambda w, d: train_argv(w, d, **{"tokenizer.path": str(w.bert / "tokenizer")})),
    # ---- runs and checkpoints ----
    Case("resume_checkpoint_of_other_architecture", _resume_with_donor("gpt"),
         ("different model", "arch"), ("start a new --run.output_dir",),
         fixed=lambda w, d: train_argv(w, d, **{"run.output_dir": str(d / "new")})),
    Case("resume_checkpoint_of_other_vocabulary", _checkpoint_of_other_tokenizer,
         ("step_2", "tokenizer"), ("start a new --run.output_dir",),
         fixed=lambda w, d: train_argv(w, d, **{"run.output_dir": str(d / "new")})),
    Case("resume_corrupted_checkpoint", _corrupt_checkpoint,
         ("step_2", "could not be loaded"), ("delete that directory",), None,
         fixed=delete_newest_checkpoint_and_resume),
    Case("resume_garbage_checkpoint", _garbage_checkpoint,
         ("step_2", "could not be loaded"), ("delete that directory",), None,
         fixed=delete_newest_checkpoint_and_resume),
    Case("output_dir_not_writable", _not_writable_out, ("file.txt",), ("choose another",), None),
    Case("eval_missing_run", lambda w, d: ["eval", str(d / "no-run")], ("no-run",), ("pass the",), None,
         fixed=lambda w, d: ["eval", str(w.bert)]),
    # ---- export and push (the corrected command: export a run of a supported family, to the local folder) ----
    Case("export_unsupported_family", lambda w, d: ["export", str(w.odd), "--out", str(d / "hf")],
         ("matches no transformers family", "norm"), ("export supports",), None, fixed=export_bert),
    Case("export_out_not_writable", _export_not_writable, ("file.txt",), ("choose another",), None,
         fixed=export_bert),
    Case("export_missing_run", lambda w, d: ["export", str(d / "no-run"), "--out", str(d / "hf")],
         ("no-run",), ("pass the",), None, fixed=export_bert),
    Case("push_without_credentials",
         lambda w, d: ["export", str(w.bert), "--out", str(d / "hf"), "--push-to-hub", "someone/tiny-bert"],
         ("no hugging face token",), ("hf_token", "hf auth login"), None, fixed=export_bert),
    Case("push_bad_repo_id",
         lambda w, d: ["export", str(w.bert), "--out", str(d / "hf"), "--push-to-hub", "not a repo id"],
         ("repo id",), ("use org/name",), None, fixed=export_bert),
]


class World:
    """The shared tiny finished runs and corpus."""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    shared, cases_dir = root / "shared", root / "cases"
    env = cli_env(root)
    w = World()
    w.corpus = write_corpus(shared / "data", n_paragraphs=120)
    runs = {"bert": {}, "gpt": {"model.preset": "gpt2", "objective.name": "clm"},
            "odd": {"model.norm": "rmsnorm"}}

    names = list(runs)
    jobs = [(["train", *tiny_flags(shared / name, w.corpus, steps=2,
                                   **{"run.save_every": 1, "run.eval_every": 2, "run.sample": "false",
                                      "run.mixed_precision": "no", **runs[name]})], shared) for name in names]
    for name, proc in zip(names, pretrain_many(jobs, env, root / "logs-runs", parallel=2)):
        assert proc.returncode == 0, proc.stderr[-3000:]
        setattr(w, name, shared / name / "run")  # its packed-block cache stays, as a user's would

    prepared = []
    for case in CASES:
        d = cases_dir / case.name
        d.mkdir(parents=True)
        prepared.append((case, d, case.setup(w, d)))
    before = {case.name: snapshot(shared, d) for case, d, _ in prepared}
    done = pretrain_many([(argv, d) for _, d, argv in prepared], env, root / "logs-cases")
    procs = {case.name: proc for (case, _, _), proc in zip(prepared, done)}
    results = {case.name: (procs[case.name], before[case.name], snapshot(shared, d)) for case, d, _ in prepared}
    return results, w, env, root


@pytest.fixture(scope="module")
def corrected(outcomes):
    """After every refusal: the corrected command, in the same case directory."""
    results, w, env, root = outcomes
    jobs = [((case.fixed or train_argv)(w, root / "cases" / case.name), root / "cases" / case.name) for case in CASES]
    return dict(zip([c.name for c in CASES], pretrain_many(jobs, env, root / "logs-corrected")))


def error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not PROGRESS.search(ln)]
    return lines[0] if len(lines) == 1 else repr(lines)


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 20 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_error(outcomes, case):
    proc, before, after = outcomes[0][case.name]
    shown = f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    if case.code is None:
        assert proc.returncode not in (0, None) and proc.returncode > 0, shown
    else:
        assert proc.returncode == case.code, shown
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not PROGRESS.search(ln)]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    message = lines[0].lower()
    for word in case.problem:
        assert word.lower() in message, f"the error does not name the problem ({word!r}):\n{lines[0]}"
    assert any(word.lower() in message for word in case.fix), f"the error does not say the fix:\n{lines[0]}"
    changed = sorted(p for p in before if before[p] != after.get(p))
    assert not changed, f"existing files changed or removed: {changed}\n{shown}"
    created = sorted(set(after) - set(before))
    assert not created, f"a refused command left files or directories behind: {created}\n{shown}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_corrected_command_then_runs(corrected, case):
    proc = corrected[case.name]
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, \
        f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("name", ["unknown_key", "binary_corpus", "resume_corrupted_checkpoint"])
def test_forked_runs_match_real_processes(outcomes, name):
    """The same case through a real `python -m pretrain.cli` process: the same exit status and error line."""
    results, w, env, root = outcomes
    case = next(c for c in CASES if c.name == name)
    forked_dir, real_dir = root / "cases" / name, root / "real" / name
    real_dir.mkdir(parents=True)
    real = pretrain(case.setup(w, real_dir), env, real_dir)
    forked = results[name][0]
    assert "Traceback" not in real.stdout + real.stderr
    assert real.returncode == forked.returncode
    assert error_line(real).replace(str(real_dir), "DIR") == error_line(forked).replace(str(forked_dir), "DIR")
