"""Fill-in-the-middle: every reordered document is the original plus the three sentinels in PSM or SPM order, the
rates and the cut points have the reference statistics, fim_rate 0 is plain causal LM, validation logs the
left-to-right loss beside the FIM loss, and a run trains and exports as GPT-2 with the sentinels in its tokenizer."""
import contextlib
import copy
import io
import json

import pytest
import torch
from objectives_fixtures import bpe, model_config, tiny_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from models.errors import UserError
from objectives import build_objective
from objectives.fim import FIM_TOKENS
from pretrain.cli import main as cli_main
from pretrain.train.evaluation import validation_metrics
from train_fixtures import family_run, write_corpus


@pytest.fixture(scope="module")
def tok():
    tokenizer = copy.deepcopy(bpe())
    tokenizer.add_special_tokens({"additional_special_tokens": list(FIM_TOKENS)})
    return tokenizer


def fim(tok, **options):
    return build_objective("fim", tok, model_config("gpt2", tok), **options)


def documents_blocks(tok, rows: int, length: int, sizes=(30, 60), seed: int = 0):
    """Blocks cut from a stream of documents of ordinary tokens (sizes: their length range), each ending in EOS."""
    g = torch.Generator().manual_seed(seed)
    specials = set(tok.all_special_ids)
    ordinary = torch.tensor([v for v in range(len(tok)) if v not in specials])
    stream = []
    while len(stream) < rows * length:
        n = int(torch.randint(sizes[0], sizes[1] + 1, (1,), generator=g))
        stream += ordinary[torch.randint(len(ordinary), (n,), generator=g)].tolist() + [tok.eos_token_id]
    return torch.tensor(stream[:rows * length]).view(rows, length)


def split_at_eos(row, eos):
    """The complete documents of a row (without their EOS), in order; the piece after the last EOS is left out."""
    docs, current = [], []
    for t in row:
        if t == eos:
            docs.append(current)
            current = []
        else:
            current.append(t)
    return docs


def transformed_pairs(tok, blocks, objective, seed=0):
    """(original, transformed) of every document that is complete in both the block and the batch."""
    batch = objective.collate(blocks, torch.Generator().manual_seed(seed))
    full = torch.cat([batch["input_ids"], batch["labels"][:, -1:]], dim=1)
    assert full.shape == blocks.shape and torch.equal(batch["labels"], full[:, 1:])  # causal LM on the new rows
    pairs = []
    for original, new in zip(blocks.tolist(), full.tolist()):
        old_docs, new_docs = split_at_eos(original, tok.eos_token_id), split_at_eos(new, tok.eos_token_id)
        # the first piece of a block may be a document's tail; it is reordered like any document
        pairs += list(zip(old_docs, new_docs))
    return pairs


def parse(new, tok, spm_possible=True):
    """('psm' | 'spm' | None, prefix+middle+suffix rebuilt, cut points (i, j) for PSM)."""
    pre, mid, suf = tok.convert_tokens_to_ids(list(FIM_TOKENS))
    if pre not in new:
        return None, new, None
    assert new[0] == pre and new.count(pre) == new.count(mid) == new.count(suf) == 1
    m = new.index(mid)
    if new[1] == suf and spm_possible:  # SPM: <pre> <suf> S <mid> P M (a PSM with an empty prefix reads the same)
        return "spm", new[m + 1:] + new[2:m], None
    s = new.index(suf)
    prefix, suffix, middle = new[1:s], new[s + 1:m], new[m + 1:]
    return "psm", prefix + middle + suffix, (len(prefix), len(prefix) + len(middle))


def test_reordered_documents_are_the_original_plus_three_sentinels_at_the_reference_rates(tok):
    objective = fim(tok)
    pairs = transformed_pairs(tok, documents_blocks(tok, 96, 257), objective)
    kinds = []
    for old, new in pairs:
        kind, rebuilt, _ = parse(new, tok)
        assert rebuilt == old  # a permutation that puts the text back exactly
        assert len(new) == len(old) + (3 if kind else 0)
        kinds.append(kind)
    n = len(kinds)
    assert n > 500
    reordered = sum(k is not None for k in kinds) / n
    assert abs(reordered - 0.5) < 4 * (0.25 / n) ** 0.5
    spm = sum(k == "spm" for k in kinds) / sum(k is not None for k in kinds)
    assert 0.44 < spm < 0.60  # 0.5, plus PSM documents with an empty prefix (~2%), which read as SPM


def test_the_two_cut_points_are_uniform_over_the_token_positions(tok):
    n = 20
    objective = fim(tok, fim_rate=1.0, spm_rate=0.0)
    pairs = transformed_pairs(tok, documents_blocks(tok, 256, 126, sizes=(n, n), seed=1), objective, seed=1)
    cuts = []
    for _, new in pairs:
        kind, _, ij = parse(new, tok, spm_possible=False)
        assert kind == "psm"
        cuts += ij  # the two sorted draws, pooled: each uniform on 0..n
    counts = torch.bincount(torch.tensor(cuts), minlength=n + 1).double()
    assert len(counts) == n + 1 and counts.min() > 0  # both ends reachable: empty prefix, empty suffix
    expected = len(cuts) / (n + 1)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.3, chi2  # chi-square, 20 degrees of freedom, p = 0.001


def test_rate_zero_is_causal_lm_and_rate_one_reorders_every_document(tok):
    blocks = documents_blocks(tok, 8, 65)
    plain = build_objective("clm", tok, model_config("gpt2", tok)).collate(blocks, torch.Generator())
    none = fim(tok, fim_rate=0.0).collate(blocks, torch.Generator().manual_seed(3))
    assert plain.keys() == none.keys() and all(torch.equal(plain[k], none[k]) for k in plain)
    kinds = [parse(new, tok)[0] for _, new in transformed_pairs(tok, blocks, fim(tok, fim_rate=1.0))]
    assert kinds and None not in kinds


def test_padding_stays_at_the_end_and_is_never_a_target(tok):
    blocks = documents_blocks(tok, 4, 65)
    blocks[-1, 40:] = tok.pad_token_id
    batch = fim(tok, fim_rate=1.0).collate(blocks, torch.Generator().manual_seed(0))
    last = batch["input_ids"][-1]
    real = int((last != tok.pad_token_id).sum())
    assert real > 40 and (last[real:] == tok.pad_token_id).all()  # the sentinels grew into the padding
    assert (batch["labels"][-1, real - 1:] == -100).all() and (batch["labels"][-1, :real - 1] != -100).all()


def test_options_and_tokens_are_checked(tok):
    with pytest.raises(UserError, match="fim_rate=1.5 must be in"):
        fim(tok, fim_rate=1.5)
    with pytest.raises(UserError, match="<fim_prefix>"):
        fim(bpe())  # a tokenizer without the sentinels
    with pytest.raises(UserError, match="cannot train an encoder"):
        build_objective("fim", tok, model_config("bert", tok))


def test_validation_logs_the_left_to_right_loss_beside_the_fim_loss(tok):
    model = tiny_model("gpt2", tok)
    blocks = documents_blocks(tok, 16, 65)
    metrics = validation_metrics(model, fim(tok), blocks, batch_size=8, seed=0)
    plain = validation_metrics(model, build_objective("clm", tok, model_config("gpt2", tok)), blocks, 8, 0)
    assert metrics["l2r_loss"] == plain["loss"] and metrics["l2r_perplexity"] == plain["perplexity"]
    assert metrics["loss"] != metrics["l2r_loss"] and "perplexity" not in metrics


def test_a_fim_run_trains_logs_both_losses_and_exports_as_gpt2(tmp_path):
    corpus = write_corpus(tmp_path / "data")
    run = family_run(tmp_path / "run", "gpt2", corpus, tmp_path / "cache", 6, **{"--objective.name": "fim"})
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["split"] == "val"]
    assert val and all({"loss", "l2r_loss", "l2r_perplexity"} <= set(row) for row in val)
    out = tmp_path / "hf"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["export", str(run), "--out", str(out)]) == 0
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert set(FIM_TOKENS) <= set(hf_tok.all_special_tokens)
    ids = hf_tok("<fim_prefix>def f(<fim_suffix>) return<fim_middle>", add_special_tokens=False).input_ids
    assert [hf_tok.convert_ids_to_tokens(i) for i in ids].count("<fim_middle>") == 1
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "gpt2" and model.config.vocab_size == len(hf_tok)
    assert set(load_file(out / "model.safetensors")) >= {"transformer.wte.weight"}


def test_the_comparison_shares_a_tokenizer_with_the_fim_sentinels(tmp_path):
    from pretrain.compare.config import CompareConfig
    from pretrain.compare.runner import shared_tokenizer
    from pretrain.data.tokenizer import TokenizerConfig

    bpe().save_pretrained(tmp_path / "plain")  # a tokenizer without them: the comparison adds them
    runs = [{"name": "gpt2+clm", "objective": {"name": "clm"}}, {"name": "gpt2+fim", "objective": {"name": "fim"}}]
    cfg = CompareConfig(output_dir=str(tmp_path / "cmp"), runs=runs,
                        tokenizer=TokenizerConfig(kind="bpe", path=str(tmp_path / "plain")))
    with pytest.warns(UserWarning, match="fim_prefix"), contextlib.redirect_stdout(io.StringIO()):
        target, shared = shared_tokenizer(cfg, runs, is_main=True)
    assert set(FIM_TOKENS) <= set(shared.get_vocab()) and (target / "tokenizer.json").is_file()
    fim(shared)  # the objective accepts it
