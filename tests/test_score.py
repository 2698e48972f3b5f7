"""Zero-shot minimal pairs (issue 30, `pretrain score`): each family's sentence score checked against a hand
computation on the transformers class of its export (a decoder's log-softmax gathered from the logits; an MLM's
pseudo-log-likelihood as a loop of single-mask forward passes, both variants), a run scored as its export, batched
as unbatched, a constant model at 0% (a tie is wrong), the pair sources deterministic and really minimal pairs, and
bad input refused in one line with nothing written."""
from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from pretrain.cli import main as cli_main
from pretrain.evaluate.grammar import grammar_pairs
from pretrain.evaluate.perturb import PERTURBATIONS, corpus_pairs
from pretrain.evaluate.score import Scorer, open_scorer, score_pairs, sentence_scores
from train_fixtures import family_run, write_corpus

SENTENCES = ["The quick zebras were jumping over fences.", "A teacher reads the letters slowly.",
             "Quixotic sphinxes judge vows.", "It is raining."]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny run of four families and its export (two steps: scoring is checked on whatever weights they hold)."""
    root = tmp_path_factory.mktemp("score")
    corpus = write_corpus(root / "corpus", n_paragraphs=60)
    out = {}
    for family in ("gpt2", "bert", "bart", "t5"):
        run = family_run(root / f"run_{family}", family, corpus, root / "cache", 2)
        exported = root / f"export_{family}"
        assert run_cli(["export", run, "--out", exported])[0] == 0
        out[family] = (run, exported)
    return out


def run_cli(args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def plain_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---- the score of a sentence, by hand on the transformers classes ------------------------------------------------
def test_decoder_score_is_the_log_softmax_of_the_transformers_logits(runs, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, exported = runs["gpt2"]
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(exported)
    expected = []
    for text in SENTENCES:
        ids = plain_ids(tok, text)
        with torch.no_grad():
            logits = model(torch.tensor([[tok.eos_token_id] + ids])).logits[0]  # documents are joined by EOS
        logp = torch.log_softmax(logits.double(), -1)
        expected.append(sum(float(logp[i, t]) for i, t in enumerate(ids)))
    for source in (run, exported):
        scorer = open_scorer(str(source))
        got = sentence_scores(scorer, [scorer.encode(t) for t in SENTENCES])
        assert got == pytest.approx(expected, abs=1e-4), source


def _pll_by_hand(model, tok, text: str, variant: str) -> float:
    """Salazar et al.: one forward pass per token with [MASK] at it; Kauf & Ivanova's PLL-word-l2r also masks the
    tokens of the same word to its right. Word membership from the fast tokenizer's word ids."""
    enc = tok(text, add_special_tokens=False)
    ids, words = enc["input_ids"], enc.word_ids()
    total = 0.0
    for i, target in enumerate(ids):
        masked = list(ids)
        for j in range(i, len(ids)):
            if j == i or variant == "word" and words[j] == words[i]:
                masked[j] = tok.mask_token_id
        with torch.no_grad():
            logits = model(torch.tensor([masked + [tok.eos_token_id]])).logits[0, i]  # the run's framing: text </s>
        total += float(torch.log_softmax(logits.double(), -1)[target])
    return total


@pytest.mark.parametrize("variant", ["word", "token"])
def test_mlm_pseudo_log_likelihood_is_the_loop_of_single_mask_passes(runs, variant, one_thread):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    run, exported = runs["bert"]
    model = AutoModelForMaskedLM.from_pretrained(exported, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(exported)
    words = [tok(t, add_special_tokens=False).word_ids() for t in SENTENCES]
    assert any(len(w) > len(set(w)) for w in words), "no word of several tokens: the variants would not differ"
    expected = [_pll_by_hand(model, tok, t, variant) for t in SENTENCES]
    for source in (run, exported):
        scorer = open_scorer(str(source), variant)
        got = sentence_scores(scorer, [scorer.encode(t) for t in SENTENCES])
        assert got == pytest.approx(expected, abs=1e-5), (source, variant)
    # the other variant is told apart: a barely trained model, but its scores move by more than the tolerance
    other = [_pll_by_hand(model, tok, t, "token" if variant == "word" else "word") for t in SENTENCES]
    assert max(abs(a - b) for a, b in zip(expected, other)) > 5e-5


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_encoder_decoder_run_scores_as_its_export_and_batched_as_unbatched(runs, family, one_thread):
    """The objective's framing (infilling's <mask>, span corruption's sentinel) and the transformers folder's agree;
    every sentence alone gives what packed batches give (padding of encoder and decoder invisible)."""
    run, exported = runs[family]
    native, hf = open_scorer(str(run)), open_scorer(str(exported))
    ids = [native.encode(t) for t in SENTENCES]
    assert ids == [hf.encode(t) for t in SENTENCES]
    batched = sentence_scores(native, ids)
    assert batched == pytest.approx(sentence_scores(native, ids, max_tokens=1), abs=1e-4)
    assert batched == pytest.approx(sentence_scores(hf, ids), abs=1e-4)
    assert native.method == hf.method


def test_electra_scores_through_its_generator_in_the_run_and_the_export(tmp_path, one_thread):
    corpus = write_corpus(tmp_path / "corpus", n_paragraphs=40)
    run = family_run(tmp_path / "run", "bert", corpus, tmp_path / "cache", 2,
                     **{"--model.preset": "electra", "--objective.name": "electra"})
    assert run_cli(["export", run, "--out", tmp_path / "export"])[0] == 0
    native, hf = open_scorer(str(run)), open_scorer(str(tmp_path / "export"))
    ids = [native.encode(t) for t in SENTENCES]
    assert sentence_scores(native, ids) == pytest.approx(sentence_scores(hf, ids), abs=1e-5)
    assert native.method == hf.method and "generator" in native.method
    assert "ElectraForMaskedLM" in hf.description


def test_batched_equals_unbatched_for_decoder_and_mlm(runs, one_thread):
    for family in ("gpt2", "bert"):
        scorer = open_scorer(str(runs[family][0]))
        ids = [scorer.encode(t) for t in SENTENCES]
        assert sentence_scores(scorer, ids) == pytest.approx(sentence_scores(scorer, ids, max_tokens=1), abs=1e-4)


def test_a_constant_model_scores_zero_not_one_hundred(runs):
    """The same distribution everywhere: both sentences of a pair of equal token length tie, and a tie is wrong."""
    real = open_scorer(str(runs["gpt2"][1]))
    constant = Scorer(real.tokenizer, real.rows, lambda batch, rows, pos: torch.zeros(len(rows), len(real.tokenizer)),
                      "constant", "constant", None, real.pad_id)
    pairs = [p for p in grammar_pairs(per_phenomenon=20) if len(real.encode(p.good)) == len(real.encode(p.bad))]
    result = score_pairs(constant, pairs)
    assert result["n"] == len(pairs) >= 20 and result["accuracy"] == 0.0


# ---- the sources --------------------------------------------------------------------------------------------------
TEXT = [f"The cat number {k} sat on the mat while the dog slept by the door. A small bird sang in the tall tree "
        f"{k} times today. Every morning the farmer walks to the market number {k} with his old brown horse."
        for k in range(40)]


def test_corpus_perturbations_are_deterministic_and_really_change_the_sentence():
    pairs = corpus_pairs(TEXT, n=80, seed=3)
    assert pairs == corpus_pairs(TEXT, n=80, seed=3) and pairs != corpus_pairs(TEXT, n=80, seed=4)
    assert Counter(p.group for p in pairs) == {k: 20 for k in PERTURBATIONS}
    for p in pairs:
        good, bad = p.good.split(), p.bad.split()
        assert p.good != p.bad
        if p.group in ("adjacent_swap", "half_swap"):
            strip = [w.rstrip(".") for w in good]
            assert sorted(strip) == sorted(w.rstrip(".") for w in bad)
        elif p.group == "duplication":
            assert len(bad) == len(good) + 1
        else:
            assert len(bad) == len(good) and sum(a != b for a, b in zip(good, bad)) == 1
    assert all(p.good.endswith(".") == p.bad.endswith(".") for p in pairs)


def test_builtin_grammar_set_is_deterministic_and_every_pair_differs():
    pairs = grammar_pairs()
    assert pairs == grammar_pairs()
    groups = Counter(p.group for p in pairs)
    assert len(groups) >= 8 and min(groups.values()) >= 100
    assert all(p.good != p.bad for p in pairs) and len(set(pairs)) == len(pairs)


# ---- the command and its bad input ----------------------------------------------------------------------------------
def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_command_json_per_phenomenon_and_skips(runs, tmp_path, one_thread):
    """BLiMP's format with per-UID groups; a pair that is identical, or identical once tokenized (BERT's
    pre-tokenizer ignores a double space), or longer than the model's 64 positions, is counted, not scored."""
    run = runs["bert"][0]
    long = " ".join(["word"] * 100) + "."
    blimp = write_jsonl(tmp_path / "blimp_x.jsonl", [
        {"sentence_good": "The cat sleeps.", "sentence_bad": "The cat sleep.", "UID": "agreement"},
        {"sentence_good": "The dogs run.", "sentence_bad": "The dogs runs.", "UID": "agreement"},
        {"sentence_good": "Who left?", "sentence_bad": "Who left?", "UID": "same"},
        {"sentence_good": "The cat  sleeps.", "sentence_bad": "The cat sleeps.", "UID": "spaces"},
        {"sentence_good": long, "sentence_bad": long + " .", "UID": "long"}])
    code, out, err = run_cli(["score", run, "--pairs", "corpus", str(tmp_path / "blimp_*.jsonl"),
                              "--corpus-pairs", "40", "--json", "--no-progress"])
    assert code == 0, err
    report = json.loads(out)
    blimp_result = report["sources"][str(blimp)]
    assert blimp_result["n"] == 2 and blimp_result["skipped"] == {"identical": 1, "same_tokens": 1, "too_long": 1}
    assert set(blimp_result["groups"]) == {"agreement"}
    assert set(report["sources"]["corpus"]["groups"]) == set(PERTURBATIONS)
    assert "pseudo-log-likelihood" in report["method"]
    assert json.loads((run / "score" / "results.json").read_text()) == report
    assert run_cli(["export", run, "--out", tmp_path / "card"])[0] == 0  # the model card shows the scores
    card = (tmp_path / "card" / "README.md").read_text()
    assert f"zero-shot minimal pairs `{blimp}`" in card and "accuracy" in card


@pytest.mark.parametrize("case", ["no_columns", "empty", "offline_hub", "corpus_without_run", "missing"])
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, case):
    run, exported = runs["bert"]
    scored = run / "score"
    before = scored.exists()
    if case == "no_columns":
        args = [run, "--pairs", write_jsonl(tmp_path / "p.jsonl", [{"good": "a b", "bad": "b a"}])]
    elif case == "empty":
        (tmp_path / "e.csv").write_text("")
        args = [run, "--pairs", tmp_path / "e.csv"]
    elif case == "offline_hub":
        args = ["someone/some-model-that-is-not-here"]
    elif case == "corpus_without_run":
        args = [exported, "--pairs", "corpus"]
    else:
        args = [run, "--pairs", tmp_path / "nothing_*.jsonl"]
    code, out, err = run_cli(["score", *args, "--no-progress"])
    assert code in (1, 2) and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert scored.exists() == before


def test_csv_with_named_columns(runs, tmp_path, one_thread):
    path = tmp_path / "mine.csv"
    path.write_text("ok,ko\nThe cat sleeps.,The cat sleep.\nThe dogs run.,Dogs the run.\n")
    code, out, err = run_cli(["score", runs["t5"][1], "--pairs", path, "--good-column", "ok", "--bad-column", "ko",
                              "--json", "--no-progress"])
    assert code == 0, err
    result = json.loads(out)["sources"][str(path)]
    assert result["n"] == 2 and "extra_id_0" in result["method"]
