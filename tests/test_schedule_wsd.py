"""Warmup-stable-decay: the learning-rate curve pinned step by step, exact resume inside each phase, and a decay
started later from a stable-phase checkpoint that reproduces the run planned with that decay from the start."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from pretrain.cli import main as cli_main
from pretrain.train.budget import Budget
from pretrain.train.config import OptimSection
from pretrain.train.optim import lr_factor
from train_fixtures import tiny_flags, write_corpus

pytestmark = pytest.mark.usefixtures("one_thread")


def curve(max_steps=None, max_time=None, elapsed=lambda step: 0.0, **optim):
    cfg = OptimSection(**{"warmup_steps": 2, "min_lr_ratio": 0.1, **optim})
    budget = Budget(SimpleNamespace(batch_size=1, grad_accum=1, max_steps=max_steps, max_tokens=None,
                                    max_time=max_time), cfg.warmup_steps, 8, 1)
    steps = max_steps or 10
    return [lr_factor(s, budget.progress(s, elapsed(s)), cfg, budget.decay_start(cfg)) for s in range(steps)]


def test_wsd_warms_up_holds_the_peak_then_decays_over_the_last_decay_steps():
    floor = 0.1
    expected = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0] + [floor + (1 - floor) * (1 - math.sqrt(q / 4)) for q in range(4)]
    assert curve(10, schedule="wsd", decay_steps=4) == pytest.approx(expected, abs=1e-12)
    linear = curve(10, schedule="wsd", decay_steps=4, decay_shape="linear")
    assert linear[6:] == pytest.approx([floor + (1 - floor) * (1 - q / 4) for q in range(4)], abs=1e-12)
    cosine = curve(10, schedule="wsd", decay_steps=4, decay_shape="cosine")
    assert cosine[8] == pytest.approx(floor + (1 - floor) * 0.5, abs=1e-12)
    # without decay_steps: the last decay_fraction of the budget after warmup (here 8 steps x 0.25 = 2)
    assert curve(10, schedule="wsd", decay_fraction=0.25)[:8] == pytest.approx([0.5] + [1.0] * 7)
    assert curve(10, schedule="wsd", decay_fraction=0.25)[9] < 1.0
    # a time budget: the decay follows the elapsed fraction
    timed = curve(None, max_time=100.0, elapsed=lambda s: 10.0 * s, schedule="wsd", decay_fraction=0.5)
    assert timed[:6] == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0]) and timed[7] < timed[6] < 1.0


def test_the_older_schedules_are_unchanged():
    p = [(s - 2) / 8 for s in range(2, 10)]
    assert curve(10, schedule="cosine")[2:] == [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * x)) for x in p]
    assert curve(10, schedule="linear")[2:] == [0.1 + 0.9 * (1 - x) for x in p]
    assert curve(10, schedule="constant") == [0.5] + [1.0] * 9


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def history(run):
    return [(r["split"], r["step"], r["loss"], r.get("lr")) for r in rows(run) if r["split"] in ("train", "val")]


def weights(run):
    return load_file(run / "final" / "model.safetensors")


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The run planned with its decay: 12 steps, warmup 2, the last 4 decaying."""
    root = tmp_path_factory.mktemp("wsd")
    corpus = write_corpus(root / "data")
    flags = tiny_flags(root / "planned", corpus, steps=12, **{"optim.schedule": "wsd", "optim.decay_steps": 4,
                                                              "optim.warmup_steps": 2, "run.save_every": 4,
                                                              "run.eval_every": 4, "model.dropout": 0.1, "run.mixed_precision": "no"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test here (the one_thread fixture): the same sums in the same order
    try:
        assert cli_main(["train", *flags]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, corpus, root / "planned" / "run"


def test_resume_is_exact_inside_warmup_stable_and_decay(planned):
    root, corpus, full = planned
    flags = tiny_flags(root / "paused", corpus, steps=12, **{"optim.schedule": "wsd", "optim.decay_steps": 4,
                                                             "optim.warmup_steps": 2, "run.save_every": 4,
                                                             "run.eval_every": 4, "model.dropout": 0.1, "run.mixed_precision": "no",
                                                             "tokenizer.path": str(full / "tokenizer")})
    run = root / "paused" / "run"
    assert cli_main(["train", *flags, "--run.stop_at_step", "1"]) == 0  # warmup
    for stop in ("5", "10"):  # stable, decay
        assert cli_main(["train", "--run.output_dir", str(run), "--resume", "--run.stop_at_step", stop]) == 0
    assert cli_main(["train", "--run.output_dir", str(run), "--resume"]) == 0
    assert history(run) == history(full) and same_weights(run, full)


def test_a_decay_from_a_stable_checkpoint_is_the_planned_run(planned, capsys):
    root, corpus, full = planned
    # a longer run whose decay would begin at step 16; it is stopped at step 8, in its stable phase
    longer = tiny_flags(root / "long", corpus, steps=20, **{"optim.schedule": "wsd", "optim.decay_steps": 4,
                                                            "optim.warmup_steps": 2, "run.save_every": 4,
                                                            "run.eval_every": 4, "model.dropout": 0.1, "run.mixed_precision": "no",
                                                            "tokenizer.path": str(full / "tokenizer")})
    assert cli_main(["train", *longer, "--run.stop_at_step", "8"]) == 0
    source = root / "long" / "run"
    decayed = root / "decayed"
    capsys.readouterr()
    # the decay run, killed after its first checkpoint in the decay phase and resumed: still exact
    assert cli_main(["train", "--run.decay_from", str(source / "checkpoints" / "step_8"), "--optim.decay_steps",
                     "4", "--run.output_dir", str(decayed), "--run.stop_at_step", "10"]) == 0
    assert "decay: from" in capsys.readouterr().out
    assert cli_main(["train", "--run.output_dir", str(decayed), "--resume"]) == 0
    assert history(decayed) == history(full) and same_weights(decayed, full)
    saved = (decayed / "config.yaml").read_text()
    assert f"decay_from: {source / 'checkpoints' / 'step_8'}" in saved and "max_steps: 12" in saved
    assert not (source / "final").exists()  # the source run is left as it was


def test_decay_refusals_are_one_line_and_leave_nothing(planned, capsys):
    root, corpus, full = planned
    checkpoints = full / "checkpoints"
    out = root / "refused"

    def refused(*argv):
        capsys.readouterr()
        assert cli_main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not (out / "config.yaml").exists() and not (out / "metrics.jsonl").exists()
        return err

    assert "already decaying" in refused("--run.decay_from", str(checkpoints / "step_12"), "--run.output_dir",
                                         str(out))
    assert "not a complete checkpoint" in refused("--run.decay_from", str(full / "checkpoints" / "step_3"),
                                                  "--run.output_dir", str(out))
    assert "its own --run.output_dir" in refused("--run.decay_from", str(checkpoints / "step_12"))
    flags = tiny_flags(root / "bad", corpus, steps=10, **{"optim.schedule": "wsd"})
    assert "does not fit" in refused(*flags, "--optim.decay_steps", "9")
    assert "time budget" in refused(*flags, "--optim.decay_steps", "3", "--run.max_steps", "null",
                                    "--run.max_time", "60")
    assert "decay_fraction" in refused(*flags, "--optim.decay_fraction", "0")

