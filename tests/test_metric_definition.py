"""One definition of every logged number (issue 29, point 7): a metric the trainer logs for a step of two
gradient-accumulation micro-batches equals the one validation logs for the same two batches, for every objective;
losses and accuracies are means over all the targets the batches hold (not the plain mean of per-batch means,
which the micro-batches' unequal target counts make different), and ELECTRA's disc_auc is the share of all the
batches' (replaced, original) pairs ranked right, counted here pair by pair."""
import copy
import math
import time
from types import SimpleNamespace

import pytest
import torch

from models import Transformer
from objectives import build_objective
from objectives_fixtures import bpe, model_config, text_blocks, unigram, wordpiece
from pretrain.train import evaluation, trainer as trainer_module
from pretrain.train.build import make_accelerator
from pretrain.train.config import OptimSection, RunSection
from pretrain.train.evaluation import validation_metrics
from pretrain.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
BATCH = 4


def ul2_tokenizer():
    from objectives.ul2 import PARADIGMS
    from pretrain.data.tokenizer import ensure_special_tokens

    with pytest.warns(UserWarning):  # it says which tokens it adds
        return ensure_special_tokens(copy.deepcopy(unigram()), tuple(PARADIGMS.values()))


# objective -> (tokenizer, preset, seq_len)
SETUPS = {"mlm": (wordpiece, "bert", 32), "clm": (bpe, "gpt2", 32), "span": (unigram, "t5", 64),
          "electra": (wordpiece, "electra", 32), "ul2": (ul2_tokenizer, "t5", 128)}


def one_step_and_validation(name, tmp_path, monkeypatch):
    """(the training row of one step of 2 micro-batches, the validation of the same 2 batches, the metrics of each
    batch as the objective returned them)."""
    make_tok, preset, seq_len = SETUPS[name]
    tok = make_tok()
    cfg_model = model_config(preset, tok, max_seq_len=max(seq_len, 128))
    torch.manual_seed(0)  # ELECTRA's generator
    objective = build_objective(name, tok, cfg_model)
    block_length = objective.block_length(seq_len)
    blocks = text_blocks(tok, 2 * BATCH, block_length)
    blocks[-1, block_length // 3:] = tok.pad_token_id  # the corpus's padded last block: fewer targets there
    # the same masks for micro-batch m and validation batch m: a generator seeded by the batch's number only
    for module in (trainer_module, evaluation):
        monkeypatch.setattr(module, "generator", lambda *key: torch.Generator().manual_seed(int(key[-1])))
    per_batch, loss = [], objective.loss

    def recorded(model, batch):
        out = loss(model, batch)
        per_batch.append(out[1])
        return out

    objective.loss = recorded
    run = RunSection(output_dir=str(tmp_path / name), batch_size=BATCH, grad_accum=2, max_steps=1, seq_len=seq_len,
                     eval_every=100, save_every=100, progress=False, mixed_precision="no")
    cfg = SimpleNamespace(run=run, optim=OptimSection(lr=1e-3, warmup_steps=0))
    torch.manual_seed(0)
    trainer = Trainer(cfg, Transformer(cfg_model), objective, block_length, blocks, blocks, tmp_path / name,
                      make_accelerator(cfg, tmp_path / name, None), {"arch": cfg_model.arch})
    window, _, _ = trainer.order.step_indices(0, 0)
    in_step_order = torch.cat([trainer.order.micro_batch(window, m, 0) for m in range(2)])
    val = validation_metrics(trainer.module, objective, in_step_order, BATCH, seed=0, own=trainer.own_module)
    trainer._t0, trainer._elapsed0 = time.perf_counter(), 0.0
    row = trainer.train_step()  # the metrics of the forward before its optimizer step
    return row, val, per_batch[2:]


@pytest.mark.parametrize("name", list(SETUPS))
def test_training_and_validation_log_the_same_number_for_the_same_batches(name, tmp_path, monkeypatch):
    row, val, micro = one_step_and_validation(name, tmp_path, monkeypatch)
    assert len(micro) == 2
    shared = set(val) & set(row)
    assert set(val) <= set(row) | {"perplexity"} and {"loss", "accuracy", "n_predicted"} <= shared
    for key in sorted(shared):  # perplexity on its log scale: exp() turns float noise in a loss of ~17 into 1e-6
        got, want = ((math.log(row[key]), math.log(val[key])) if key.endswith("perplexity")
                     else (row[key], val[key]))
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7), key
    if name == "ul2":  # per-denoiser and per-paradigm losses, each over its own targets
        assert {"r3_15_loss", "x64_50_loss", "s_loss", "r_loss", "x_loss"} <= shared
    # the batches hold unequal numbers of targets, so the old formula (the plain mean over micro-batches) differs
    counts = [float(m["n_predicted"]) for m in micro]
    assert counts[0] != counts[1]
    total = sum(float(m["loss"]) * float(m["n_predicted"]) for m in micro) / sum(counts)
    assert row["loss"] == pytest.approx(total, rel=1e-6)
    plain = {k: sum(float(m[k]) for m in micro) / 2 for k in ("loss", "accuracy")}
    assert any(abs(row[k] - plain[k]) > 1e-5 * abs(plain[k]) for k in plain), (row, plain)  # 10 x the tolerance


def test_electra_metrics_are_means_over_their_own_targets(tmp_path, monkeypatch):
    row, val, micro = one_step_and_validation("electra", tmp_path, monkeypatch)
    selected = [float(m["gen_n_predicted"]) for m in micro]
    assert selected[0] != selected[1] and row["gen_n_predicted"] == sum(selected)
    gen = sum(float(m["gen_loss"]) * n for m, n in zip(micro, selected)) / sum(selected)
    assert row["gen_loss"] == pytest.approx(gen, rel=1e-6) and val["gen_loss"] == pytest.approx(gen, rel=1e-6)
    assert abs(row["gen_loss"] - sum(float(m["gen_loss"]) for m in micro) / 2) > 1e-5


def test_disc_auc_counts_every_pair_of_the_batches(tmp_path):
    """Two batches' scores and labels: the aggregated AUC is the share of (replaced, original) pairs within a
    batch where the replaced one scores higher (ties half), counted one by one."""
    from objectives.electra import auc, pairs
    from pretrain.train.aggregate import MetricSums

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(40, generator=g).round(decimals=1), torch.rand(40, generator=g) < p) for p in (0.1, 0.5)]
    batches[1][0][batches[1][1]] += 0.7  # the second batch separates better, and holds many more pairs
    sums = MetricSums({"disc_auc": "disc_pairs"})
    right = total = 0.0
    for scores, truth in batches:
        sums.add({"disc_auc": auc(scores, truth), "disc_pairs": pairs(truth)})
        for s_pos in scores[truth].tolist():
            for s_neg in scores[~truth].tolist():
                right += 1.0 if s_pos > s_neg else 0.5 if s_pos == s_neg else 0.0
                total += 1
    out = sums.read()
    assert out["disc_pairs"] == total and out["disc_auc"] == pytest.approx(right / total, rel=1e-6)
    one_class = MetricSums({"disc_auc": "disc_pairs"})
    one_class.add({"disc_auc": auc(torch.ones(5), torch.zeros(5, dtype=torch.bool)),
                   "disc_pairs": pairs(torch.zeros(5, dtype=torch.bool))})
    assert "disc_auc" not in one_class.read()  # no pair: nothing to rank, not a made-up 0.5
