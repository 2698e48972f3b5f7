"""Trainer pieces on a tiny in-memory setup (no corpus): schedule, decay groups, checkpoint atomicity and
retention, non-finite losses (stop naming the step, or skip), activation checkpointing."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from models import ModelConfig, Transformer
from objectives import build_objective
from pretrain.errors import UserError
from pretrain.train.build import make_accelerator
from pretrain.train.checkpoint import CheckpointManager
from pretrain.train.config import OptimSection, RunSection
from pretrain.train.optim import build_optimizer, lr_factor, param_groups
from pretrain.train.trainer import Trainer, enable_activation_checkpointing
from train_dp_worker import tokenizer


class PoisonAt:
    """An objective whose loss turns NaN at the given (1-based) steps."""

    def __init__(self, inner, steps):
        self.inner, self.steps, self.calls = inner, set(steps), 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, model, batch):
        loss, metrics = self.inner.loss(model, batch)
        if model.training:
            self.calls += 1
            if self.calls in self.steps:
                loss = loss * float("nan")
                metrics = {**metrics, "loss": loss.detach()}
        return loss, metrics


def make_trainer(run_dir, poison=(), **run_overrides):
    tok = tokenizer()
    mc = ModelConfig.preset("gpt2", d_model=16, n_layers=1, n_heads=2, d_ff=32, vocab_size=len(tok), max_seq_len=16,
                            dropout=0.0)
    objective = build_objective("clm", tok, mc)
    block_length = objective.block_length(8)
    data = torch.randint(3, len(tok), (24, block_length), generator=torch.Generator().manual_seed(1))
    run = RunSection(output_dir=str(run_dir), batch_size=4, max_steps=6, seq_len=8, eval_every=3, save_every=2,
                     keep_last=2, progress=False, mixed_precision="no", **run_overrides)
    cfg = SimpleNamespace(run=run, optim=OptimSection(lr=1e-2, warmup_steps=2))
    acc = make_accelerator(cfg, run_dir, None)
    torch.manual_seed(0)
    model = Transformer(mc)
    if poison:
        objective = PoisonAt(objective, poison)
    return Trainer(cfg, model, objective, block_length, data[:20], data[20:], run_dir, acc, {"arch": mc.arch})


def test_schedule_warmup_then_cosine_to_floor():
    o = OptimSection(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_factor(s, 0.0, o) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(10, 0.0, o) == 1.0 and math.isclose(lr_factor(10, 1.0, o), 0.1)
    assert math.isclose(lr_factor(10, 0.5, o), 0.55)
    lin = OptimSection(lr=1.0, warmup_steps=0, schedule="linear", min_lr_ratio=0.0)
    assert math.isclose(lr_factor(5, 0.25, lin), 0.75)


def test_decay_only_on_weight_matrices():
    mc = ModelConfig.preset("bert", d_model=16, n_layers=1, n_heads=2, d_ff=32, vocab_size=50, max_seq_len=16)
    model = Transformer(mc)
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert all(model.get_parameter(n).ndim == 2 for n in names)
    assert "tok_emb.weight" not in names and not any("norm" in n or n.endswith("bias") for n in names)
    assert any("ff" in n for n in names)


def test_adamw_fused_by_default_on_cpu():
    mc = ModelConfig.preset("gpt2", d_model=16, n_layers=1, n_heads=2, d_ff=32, vocab_size=50, max_seq_len=16)
    model = Transformer(mc)
    opt = build_optimizer(model, OptimSection(), "cpu")
    assert opt.defaults["fused"] is True
    before = model.tok_emb.weight.detach().clone()
    model(torch.randint(0, 50, (2, 8))).sum().backward()
    opt.step()  # the fused kernel really runs here (construction does not check the device)
    assert not torch.equal(model.tok_emb.weight, before)
    assert not build_optimizer(model, OptimSection(fused=False), "cpu").defaults["fused"]


def test_checkpoints_atomic_and_pruned(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train()
    ckpt = CheckpointManager(tmp_path / "checkpoints")
    assert [s for s, _ in ckpt.complete()] == [4, 6]  # keep_last 2
    state = json.loads((tmp_path / "checkpoints" / "step_6" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["arch"] == "decoder" and state["tokens"] == 6 * 4 * 9
    (tmp_path / "checkpoints" / ".tmp-step_8").mkdir()  # a save killed half-way
    (tmp_path / "checkpoints" / "step_9").mkdir()  # no trainer_state.json: incomplete
    assert ckpt.latest().name == "step_6"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if r["split"] == "val"] == [3, 6]
    for key in ("loss", "accuracy", "lr", "tokens_per_s", "mfu", "elapsed", "grad_norm", "tokens"):
        assert key in rows[0]


def test_mfu_never_passes_one_when_the_probe_understates_the_peak(tmp_path, monkeypatch):
    """A probe that ran in a slow spell of a shared machine must not make the run report MFU above 100%."""
    monkeypatch.setattr("pretrain.train.trainer.peak_flops", lambda *a: 1.0)  # 1 FLOP/s: every step outruns it
    make_trainer(tmp_path).train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    mfu = [r["mfu"] for r in rows if r["split"] == "train"]
    assert len(mfu) == 6 and mfu[0] == 1.0 and all(0 < m <= 1.0 for m in mfu)


def test_logged_flops_are_the_formula_for_the_tokens_and_predictions_of_each_step(tmp_path):
    trainer = make_trainer(tmp_path, grad_accum=2)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["split"] == "train"]
    previous = {"flops": 0.0, "tokens": 0}
    for row in rows:
        inputs = (row["tokens"] - previous["tokens"]) // 9 * 8  # CLM blocks of 9: 8 inputs, targets shifted by one
        expected = trainer.model_cfg.train_flops(0, inputs, row["n_predicted"], 0, 8)
        assert row["flops"] - previous["flops"] == pytest.approx(expected, rel=1e-9)
        previous = row


def test_nonfinite_loss_stops_naming_the_step(tmp_path):
    trainer = make_trainer(tmp_path, poison=[3])
    with pytest.raises(UserError, match="step 3"):
        trainer.train()
    # nothing written after the NaN
    assert [s for s, _ in CheckpointManager(tmp_path / "checkpoints").complete()] == [2]


def test_nonfinite_loss_skipped_by_config(tmp_path):
    trainer = make_trainer(tmp_path, poison=[3], on_nonfinite="skip")
    trainer.train()
    assert trainer.step == 6 and trainer.skipped == 1
    assert all(torch.isfinite(p).all() for p in trainer.module.parameters())


def test_activation_checkpointing_same_gradients():
    mc = ModelConfig.preset("bart", d_model=16, n_layers=2, n_heads=2, d_ff=32, vocab_size=50, max_seq_len=16,
                            dropout=0.0)
    torch.manual_seed(0)
    a = Transformer(mc)
    b = Transformer(mc)
    b.load_state_dict(a.state_dict())
    assert enable_activation_checkpointing(b) == 4
    ids = torch.randint(3, 50, (2, 8))
    for m in (a, b):
        m(ids, decoder_input_ids=ids).pow(2).mean().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        if p.grad is None:  # the LM head is not used by this loss
            assert q.grad is None
        else:
            assert torch.allclose(p.grad, q.grad, atol=1e-6), n


def test_progress_bar_text(capsys):
    from pretrain.train.progress import Progress

    bar = Progress(True)
    bar.update(0.5, 10, 1.25, 1000.0, 0.5)
    bar.bar.refresh()
    bar.close()
    shown = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert shown.startswith("train:  50%|")
    assert shown.endswith("| step 10 loss 1.2500 tok/s 1,000 mfu 50.0% eta 0:00:00")  # no ", " before "step"

