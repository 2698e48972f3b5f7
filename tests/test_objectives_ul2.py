"""UL2's mixture of denoisers: every example is one of the seven denoisers at the paper's proportions, with its span
statistics, its paradigm token and T5's sentinel order; the S-denoiser splits the block as the prefix LM does; every
input and target fits; the same seed gives the same batch; per-paradigm losses are averaged over their own target
tokens (one batch, validation, the trainer's reduction); a run trains, logs them and exports as T5 with logits
parity."""
import contextlib
import copy
import io
import json
import math

import pytest
import torch
from objectives_fixtures import SENTINELS, merge_by_sentinel, model_config, random_blocks, text_blocks, tiny_model, unigram

from models.errors import UserError
from objectives import build_objective
from objectives.base import predict
from objectives.span import span_counts
from objectives.ul2 import DENOISER_NAMES, PARADIGMS, SPAN_DENOISERS
from pretrain.data.order import generator as seeded
from pretrain.train.evaluation import validation_metrics

SEQ_LEN = 512  # long enough that every denoiser has its mean span: (64, 15%) drops 85 tokens in 1 span
RATES = [0.8 / 6] * 6 + [0.2]  # R, R, X, X, X, X, S


@pytest.fixture(scope="module")
def tok():
    from pretrain.data.tokenizer import ensure_special_tokens

    with pytest.warns(UserWarning):  # it says which tokens it adds
        return ensure_special_tokens(copy.deepcopy(unigram()), tuple(PARADIGMS.values()))


def ul2(tok, **options):
    return build_objective("ul2", tok, model_config("t5", tok, max_seq_len=512), **options)


def examples(tok, blocks, batch):
    """(paradigm token, encoder tokens after it, targets, decoder inputs) of every row, padding removed."""
    mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
    out = []
    for r in range(len(blocks)):
        enc = batch["input_ids"][r][mask[r]].tolist()
        valid = batch["labels"][r] != -100
        out.append((tok.convert_ids_to_tokens(enc[0]), enc[1:], batch["labels"][r][valid].tolist(),
                    batch["decoder_input_ids"][r][:int(valid.sum())].tolist()))
    return out


def denoiser_of(length, n_noise, n_spans):
    """Index into SPAN_DENOISERS of the one whose T5 counts for this length are (n_noise, n_spans)."""
    found = [k for k, (_, mu, r) in enumerate(SPAN_DENOISERS) if span_counts(length, r, mu) == (n_noise, n_spans)]
    assert len(found) == 1, (n_noise, n_spans)
    return found[0]


@pytest.fixture(scope="module")
def drawn(tok):
    """Many examples of blocks of real text, each classified: (denoiser index 0..6, paradigm token, block row,
    encoder tokens, targets, decoder inputs)."""
    objective = ul2(tok)
    length = objective.block_length(SEQ_LEN)
    rows, ids = [], sentinel_ids(tok)
    for seed in range(16):
        blocks = random_blocks(tok, 64, length, seed=seed, special_rate=0.0)
        batch = objective.collate(blocks, torch.Generator().manual_seed(seed))
        assert batch["input_ids"].shape[1] <= SEQ_LEN and batch["labels"].shape[1] <= SEQ_LEN
        used = set()
        for token, enc, targets, previous in examples(tok, blocks, batch):
            if token == "[S2S]":
                kind = 6
                matches = [r for r in range(len(blocks)) if r not in used
                           and blocks[r, :len(enc) + len(targets)].tolist() == enc + targets]
            else:
                sentinels = [t for t in targets if t in set(ids)]
                n_noise = len(targets) - len(sentinels) - 1
                kind = denoiser_of(length, n_noise, len(sentinels))
                merged = merge_by_sentinel(enc, targets, ids)
                matches = [r for r in range(len(blocks)) if r not in used and blocks[r].tolist() == merged]
            assert matches, "an example that is not its block, rearranged"
            used.add(matches[0])
            rows.append((kind, token, blocks[matches[0]].tolist(), enc, targets, previous))
    return length, rows


def sentinel_ids(tok):
    return [tok.convert_tokens_to_ids(s) for s in SENTINELS]


def test_the_seven_denoisers_are_drawn_at_the_papers_proportions(drawn):
    _, rows = drawn
    counts = torch.bincount(torch.tensor([k for k, *_ in rows]), minlength=7).double()
    expected = torch.tensor(RATES, dtype=torch.float64) * len(rows)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 22.46, (counts.tolist(), chi2)  # chi-square, 6 degrees of freedom, p = 0.001


def test_each_denoiser_has_its_paradigm_token_rate_and_mean_span_length(drawn, tok):
    length, rows = drawn
    ids = set(sentinel_ids(tok))
    for k, (kind, mu, rate) in enumerate(SPAN_DENOISERS):
        mine = [row for row in rows if row[0] == k]
        assert mine and {row[1] for row in mine} == {PARADIGMS[kind]}
        spans = []
        for _, _, block, enc, targets, _ in mine:
            current = None
            for t in targets[:-1]:
                if t in ids:
                    current = []
                    spans.append(current)
                else:
                    current.append(t)
        n_noise = sum(len(s) for s in spans)
        assert abs(n_noise / (len(mine) * length) - rate) < 0.5 / length + 1e-9  # T5 rounds r * length
        n_spans = len(spans) / len(mine)
        # spans = round(min(noise, length - noise) / mu), so the mean span length is within (mu / 2 + 1) / spans
        assert abs(n_noise / len(spans) - mu) <= (mu / 2 + 1) / n_spans + 1e-9, (kind, mu, n_noise / len(spans))
        assert min(len(s) for s in spans) >= 1
    assert {row[1] for row in rows if row[0] == 6} == {"[S2S]"}


def test_sentinels_in_t5s_order_and_targets_end_in_eos(drawn, tok):
    _, rows = drawn
    ids = sentinel_ids(tok)
    for kind, _, _, enc, targets, previous in rows:
        if kind == 6:
            continue
        in_enc = [t for t in enc if t in ids]
        assert in_enc == ids[:len(in_enc)] and [t for t in targets if t in ids] == in_enc  # <extra_id_0> first
        assert targets[0] == ids[0] and enc[-1] == targets[-1] == tok.eos_token_id
        assert previous == [tok.pad_token_id] + targets[:-1]


def test_the_s_denoiser_splits_its_prefix_uniformly(drawn, tok):
    length, rows = drawn
    s_rows = [row for row in rows if row[0] == 6]
    width = ul2(tok).widths(length)[0]
    prefixes = []
    for _, _, block, enc, targets, previous in s_rows:
        assert enc + targets == block[:width]  # [S2S] prefix | continuation: the first encoder-width tokens
        assert previous == [tok.pad_token_id] + targets[:-1]
        prefixes.append(len(enc))
    assert min(prefixes) >= 1 and max(prefixes) <= width - 1
    mean, expected = sum(prefixes) / len(prefixes), width / 2  # uniform on 1 .. width - 1
    sd = math.sqrt(((width - 1) ** 2 - 1) / 12 / len(prefixes))
    assert abs(mean - expected) < 4 * sd


@pytest.mark.parametrize("seq_len", [8, 16, 33, 64, 128, 512])
def test_every_input_and_target_fits_and_the_block_is_the_longest_that_does(tok, seq_len):
    objective = ul2(tok)
    length = objective.block_length(seq_len)
    enc, dec = objective.widths(length)
    assert enc <= seq_len and dec <= seq_len
    assert max(objective.widths(length + 1)) > seq_len  # one raw token more would overflow a denoiser
    blocks = text_blocks(tok, 16, length)
    blocks[-1, length // 3:] = tok.pad_token_id  # the corpus's padded last block
    batch = objective.collate(blocks, torch.Generator().manual_seed(seq_len))
    assert batch["input_ids"].shape == (16, enc) and batch["labels"].shape == (16, dec)
    mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
    assert not (batch["labels"] == tok.pad_token_id).any()  # padding is never a target nor attended to
    assert not (batch["input_ids"][mask] == tok.pad_token_id).any()


def test_the_same_seed_gives_the_same_batch(tok):
    objective = ul2(tok)
    blocks = text_blocks(tok, 16, objective.block_length(64))
    a, b = (objective.collate(blocks, torch.Generator().manual_seed(5)) for _ in range(2))
    c = objective.collate(blocks, torch.Generator().manual_seed(6))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].shape == c[k].shape)


def test_s_rate_options_and_tokens_are_checked(tok):
    only_s = ul2(tok, s_rate=1.0)
    batch = only_s.collate(text_blocks(tok, 8, only_s.block_length(32)), torch.Generator())
    assert (batch["input_ids"][:, 0] == tok.convert_tokens_to_ids("[S2S]")).all()
    with pytest.raises(UserError, match="s_rate=1.5 must be in"):
        ul2(tok, s_rate=1.5)
    with pytest.raises(UserError, match=r"\[NLU\]"):
        ul2(unigram())  # a tokenizer without the paradigm tokens
    with pytest.raises(UserError, match="cannot train a decoder"):
        build_objective("ul2", tok, model_config("gpt2", tok))
    with pytest.raises(UserError, match="sentinels"):
        ul2(tok).block_length(1024)


def test_per_paradigm_losses_are_means_over_their_own_targets(tok):
    objective = ul2(tok)
    model = tiny_model("t5", tok).eval()
    batch = objective.collate(text_blocks(tok, 16, objective.block_length(64)), torch.Generator().manual_seed(2))
    loss, metrics = objective.loss(model, batch)
    keys = ("input_ids", "attention_mask", "decoder_input_ids")
    hidden = model(**{k: batch[k] for k in keys if k in batch})
    whole, reference = predict(model, hidden, batch["labels"])
    assert abs(loss.item() - whole.item()) < 1e-5 and metrics["n_predicted"] == reference["n_predicted"]
    for p, kind in enumerate(PARADIGMS):
        rows = batch["paradigm"] == p
        assert rows.any()
        part, part_metrics = predict(model, hidden[rows], batch["labels"][rows])
        assert abs(metrics[f"{kind}_loss"].item() - part.item()) < 1e-5
        assert metrics[f"{kind}_n_predicted"] == part_metrics["n_predicted"]
    for k, name in enumerate(DENOISER_NAMES):  # and each of the seven denoisers over its own
        rows = batch["denoiser"] == k
        if rows.any():
            part, part_metrics = predict(model, hidden[rows], batch["labels"][rows])
            assert abs(metrics[f"{name}_loss"].item() - part.item()) < 1e-5, name
            assert metrics[f"{name}_n_predicted"] == part_metrics["n_predicted"]
        else:
            assert metrics[f"{name}_n_predicted"] == 0
    first = tok.convert_ids_to_tokens(batch["input_ids"][:, 0].tolist())
    assert [PARADIGMS[kind] for kind in (list(PARADIGMS)[p] for p in batch["paradigm"].tolist())] == first


def test_validation_averages_each_paradigm_over_its_tokens(tok):
    objective = ul2(tok)
    model = tiny_model("t5", tok)
    blocks = text_blocks(tok, 24, objective.block_length(32))
    metrics = validation_metrics(model, objective, blocks, batch_size=4, seed=3)
    sums = {}
    model.eval()
    with torch.no_grad():
        for i in range(6):
            batch = objective.collate(blocks[4 * i:4 * i + 4], seeded(3, "eval", i))
            _, m = objective.loss(model, batch)
            for kind in PARADIGMS:
                n = float(m[f"{kind}_n_predicted"])
                sums[kind] = [a + b for a, b in zip(sums.get(kind, [0.0, 0.0]), [float(m[f"{kind}_loss"]) * n, n])]
    for kind, (total, n) in sums.items():
        assert metrics[f"{kind}_n_predicted"] == int(n)
        if n:
            assert abs(metrics[f"{kind}_loss"] - total / n) < 1e-9
        else:
            assert f"{kind}_loss" not in metrics


def test_the_trainer_weights_a_parts_loss_by_its_count():
    from pretrain.train.aggregate import MetricSums

    t = torch.tensor
    micro = [{"loss": t(2.0), "accuracy": t(0.5), "n_predicted": t(10.0), "s_loss": t(1.0),
              "s_n_predicted": t(1.0), "r_loss": t(0.0), "r_n_predicted": t(0.0)},
             {"loss": t(4.0), "accuracy": t(0.25), "n_predicted": t(30.0), "s_loss": t(3.0),
              "s_n_predicted": t(3.0), "r_loss": t(0.0), "r_n_predicted": t(0.0)}]
    sums = MetricSums()
    for metrics in micro:  # as train_step accumulates
        sums.add(metrics)
    out = sums.read()
    assert out["loss"] == 3.5 and out["n_predicted"] == 40 and out["s_n_predicted"] == 4  # (2*10 + 4*30) / 40
    assert abs(out["accuracy"] - (5 + 7.5) / 40) < 1e-7
    assert abs(out["s_loss"] - 10 / 4) < 1e-7  # (1 * 1 + 3 * 3) / 4, not the mean of 1 and 3
    assert "r_loss" not in out and out["r_n_predicted"] == 0


def test_a_ul2_run_trains_logs_per_paradigm_losses_and_exports_as_t5_with_parity(tmp_path):
    import transformers

    from pretrain.cli import main as cli_main
    from pretrain.train.saved_run import load_run_model
    from train_fixtures import family_run, write_corpus

    torch.set_num_threads(1)
    corpus = write_corpus(tmp_path / "data")
    run = family_run(tmp_path / "run", "t5", corpus, tmp_path / "cache", 6, **{
        "--objective.name": "ul2", "--run.seq_len": "32", "--run.mixed_precision": "no"})
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert train and val and all({"loss", "x_loss", "x_n_predicted"} <= set(r) for r in train + val)
    assert any("s_loss" in r for r in val) and any("r_loss" in r for r in val)
    assert all({f"{name}_n_predicted" for name in DENOISER_NAMES} <= set(r) for r in train + val)
    assert any(f"{name}_loss" in r for r in val for name in DENOISER_NAMES if name != "s")
    assert train[-1]["loss"] < train[0]["loss"]
    out = tmp_path / "hf"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["export", str(run), "--out", str(out)]) == 0
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert set(PARADIGMS.values()) <= set(hf_tok.all_special_tokens)
    ids = hf_tok("[NLG] a dog <extra_id_0> tree", add_special_tokens=False).input_ids
    assert hf_tok.convert_ids_to_tokens(ids)[0] == "[NLG]"
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "T5ForConditionalGeneration"
    model, cfg, tokenizer, _ = load_run_model(run)
    objective = build_objective("ul2", tokenizer, cfg)
    batch = objective.collate(text_blocks(tokenizer, 4, objective.block_length(32)), torch.Generator())
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids") if k in batch}
    with torch.no_grad():
        ours, theirs = model.logits(model(**inputs)), hf(**inputs).logits
    valid = batch["labels"] != -100
    assert (ours - theirs)[valid].abs().max().item() < 1e-4


def test_the_cloze_asks_the_r_denoiser_with_nlu_and_the_first_sentinel(tok):
    objective = ul2(tok)
    windows, positions = [[10, 11, 12, 13], [20, 21, 22]], [2, 0]
    inputs, index = objective.cloze_batch(windows, positions, "both")
    nlu, s0 = tok.convert_tokens_to_ids(["[NLU]", "<extra_id_0>"])
    eos = tok.eos_token_id
    assert inputs["input_ids"][0].tolist() == [nlu, 10, 11, s0, 13, eos]
    assert inputs["input_ids"][1].tolist()[:4] == [nlu, s0, 21, 22] and inputs["attention_mask"][1, -1] == 0
    assert inputs["decoder_input_ids"].tolist() == [[tok.pad_token_id, s0]] * 2 and index.tolist() == [1, 1]
    assert len(inputs["input_ids"][0]) == len(windows[0]) + objective.cloze_overhead
    left, _ = objective.cloze_batch(windows, positions, "left")
    assert left["input_ids"][0].tolist() == [nlu, 10, 11, s0, eos]


def test_the_comparison_shares_a_tokenizer_with_the_paradigm_tokens(tmp_path):
    from pretrain.compare.config import CompareConfig
    from pretrain.compare.runner import shared_tokenizer
    from pretrain.data.tokenizer import TokenizerConfig

    unigram().save_pretrained(tmp_path / "plain")  # sentinels, no paradigm tokens: the comparison adds them
    runs = [{"name": "t5+span", "objective": {"name": "span"}}, {"name": "t5+ul2", "objective": {"name": "ul2"}}]
    cfg = CompareConfig(output_dir=str(tmp_path / "cmp"), runs=runs,
                        tokenizer=TokenizerConfig(kind="unigram", path=str(tmp_path / "plain")))
    with pytest.warns(UserWarning, match="NLU"), contextlib.redirect_stdout(io.StringIO()):
        _, shared = shared_tokenizer(cfg, runs, is_main=True)
    assert set(PARADIGMS.values()) <= set(shared.get_vocab()) and "<extra_id_99>" in shared.get_vocab()
    ul2(shared)  # the objective accepts it
