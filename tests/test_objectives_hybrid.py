"""GPT-BERT hybrid (Charpentier & Samuel 2024): the mask rate and the causal share are the paper's, spans are
masked whole, targets sit one position before the hidden token, each row attends as its kind says, the loss reads
only the labelled positions, the cloze reads both sides, and both losses fall."""
import pytest
import torch
import torch.nn.functional as F
from objectives_fixtures import bpe, model_config, random_blocks, text_blocks, tiny_model, train_steps

from models.errors import UserError
from objectives import build_objective

# the authors' code, github.com/ltgoslo/gpt-bert (9fc1507): 15 of 16 processes train masked (train_10m.py:42-43,
# a 1:15 causal-to-masked ratio); the final and validation mask rate 0.15 (train_10m.py:59, dataset.py:398);
# random 0.1 and keep 0.1 of the masked (train_10m.py:60-61); spans of 1..3 tokens (dataset.py:12,17)
PAPER_CAUSAL_SHARE = 1 / 16
PAPER_MASK_P = 0.15
PAPER_MASK, PAPER_RANDOM, PAPER_KEEP = 0.8, 0.1, 0.1
PAPER_MEAN_SPAN = 2.0  # uniform over 1, 2, 3


def hybrid(tok=None, **options):
    tok = tok or bpe()
    return build_objective("hybrid", tok, model_config("gpt2", tok), **options)


def selectable(tok, inputs_before):
    """Input positions the paper may hide: not special, not the first (nothing before it predicts it)."""
    ok = ~torch.isin(inputs_before, torch.tensor(tok.all_special_ids))
    ok[:, 0] = False
    return ok


def masked_rows(obj, blocks, seed):
    """(original inputs, corrupted inputs, hidden positions) of the masked rows of one batch; a position i is
    hidden when the label at i - 1 is set (the labels are read, not the objective's internals)."""
    batch = obj.collate(blocks, torch.Generator().manual_seed(seed))
    rows = ~batch.get("causal", torch.ones(len(blocks), dtype=torch.bool))
    hidden = torch.zeros_like(batch["labels"], dtype=torch.bool)
    hidden[:, 1:] = batch["labels"][:, :-1] != -100
    return blocks[rows, :-1], batch["input_ids"][rows], hidden[rows]


def test_mask_rate_is_the_papers_over_many_batches():
    tok = bpe()
    obj = hybrid(tok, max_span=1, causal_share=0.0)
    hidden_n = selectable_n = 0
    for seed in range(20):
        original, inputs, hidden = masked_rows(obj, random_blocks(tok, 32, 129, seed=seed), seed)
        ok = selectable(tok, original)
        assert not (hidden & ~ok).any()  # never a special token, never position 0
        assert torch.equal(inputs[~hidden], original[~hidden])  # nothing corrupted without a target
        hidden_n, selectable_n = hidden_n + hidden.sum().item(), selectable_n + ok.sum().item()
    assert abs(hidden_n / selectable_n - PAPER_MASK_P) < 0.003, hidden_n / selectable_n


def test_spans_are_hidden_whole_and_replaced_as_one():
    tok = bpe()
    neighbours, hidden_total, rate, pairs, both_masked = 0, 0, [], 0, 0
    for seed in range(10):
        original, inputs, hidden = masked_rows(hybrid(tok, causal_share=0.0), random_blocks(tok, 32, 129, seed=seed,
                                                                                              special_rate=0.0), seed)
        rate.append(hidden.sum().item() / selectable(tok, original).sum().item())
        neighbours += (hidden[:, :-1] & hidden[:, 1:]).sum().item()
        hidden_total += hidden[:, :-1].sum().item()
        masked = inputs == tok.mask_token_id
        pairs += (hidden[:, :-1] & hidden[:, 1:]).sum().item()
        both_masked += (masked[:, :-1] & masked[:, 1:]).sum().item()
    # whole spans of mean length 2: about half of the hidden tokens have a hidden right neighbour (single tokens:
    # about 15%), and the threshold span taken whole adds less than max_span - 1 tokens per row
    assert neighbours / hidden_total > 0.4
    assert PAPER_MASK_P <= sum(rate) / len(rate) < PAPER_MASK_P + 2 / 127
    # one replacement per span: neighbours are both masked far more often than 0.8^2 (independent draws)
    assert both_masked / pairs > PAPER_MASK ** 2 + 0.08


def test_replacement_split_is_the_papers():
    tok = bpe()
    counts = torch.zeros(3)
    for seed in range(10):
        original, inputs, hidden = masked_rows(hybrid(tok, causal_share=0.0, max_span=1),
                                               random_blocks(tok, 32, 129, seed=seed, special_rate=0.0), seed)
        masked = (inputs == tok.mask_token_id) & hidden
        kept = (inputs == original) & hidden
        counts += torch.tensor([masked.sum(), (hidden & ~masked & ~kept).sum(), kept.sum()]).float()
    share = counts / counts.sum()
    assert (share - torch.tensor([PAPER_MASK, PAPER_RANDOM, PAPER_KEEP])).abs().max() < 0.02, share
    assert not torch.isin(inputs[hidden & ~masked], torch.tensor(tok.all_special_ids)).any()


def test_causal_share_per_batch_is_the_papers():
    tok = bpe()
    obj = hybrid(tok)
    assert obj.options.causal_share == PAPER_CAUSAL_SHARE
    where, blocks = torch.zeros(16), random_blocks(tok, 16, 17)
    for seed in range(64):  # a batch of 16 holds exactly one causal row (1:15), at a random place
        causal = obj.collate(blocks, torch.Generator().manual_seed(seed))["causal"]
        assert causal.sum().item() == 1
        where += causal.float()
    assert (where > 0).sum() >= 12  # not always the same row
    counts = [obj.collate(blocks[:8], torch.Generator().manual_seed(s))["causal"].sum().item() for s in range(400)]
    assert set(counts) == {0, 1} and abs(sum(counts) / (8 * 400) - PAPER_CAUSAL_SHARE) < 0.01  # 8 rows: 1 in 2


def test_all_causal_is_clm_and_keeps_the_fast_path():
    tok = bpe()
    blocks = text_blocks(tok, 4, 17)
    ours = hybrid(tok, causal_share=1.0).collate(blocks, torch.Generator().manual_seed(0))
    clm = build_objective("clm", tok, model_config("gpt2", tok)).collate(blocks, torch.Generator())
    assert set(ours) == set(clm) == {"input_ids", "labels"}  # no causal rows: the decoder's no-mask path
    assert all(torch.equal(ours[k], clm[k]) for k in clm)


def test_targets_are_shifted_one_position():
    tok = bpe()
    obj = hybrid(tok, causal_share=0.5)
    blocks = text_blocks(tok, 16, 33)
    batch = obj.collate(blocks, torch.Generator().manual_seed(3))
    causal, inputs, labels = batch["causal"], batch["input_ids"], batch["labels"]
    assert causal.any() and (~causal).any()
    assert torch.equal(inputs[causal], blocks[causal, :-1]) and torch.equal(labels[causal], blocks[causal, 1:])
    hidden_masked = []
    for r in (~causal).nonzero().squeeze(1).tolist():
        labelled = (labels[r] != -100).nonzero().squeeze(1)
        assert len(labelled) > 0 and labels[r, -1] == -100
        assert torch.equal(labels[r, labelled], blocks[r, labelled + 1])  # the original token one position later
        changed = (inputs[r] != blocks[r, :-1]).nonzero().squeeze(1)
        assert set((changed - 1).tolist()) <= set(labelled.tolist())  # a corrupted token is a target one before
        hidden_masked += (inputs[r, labelled + 1] == tok.mask_token_id).tolist()
    assert sum(hidden_masked) / len(hidden_masked) > 0.5  # the hidden token sits right after its label


def test_documents_first_tokens_are_never_hidden():
    tok = bpe()
    obj = build_objective("hybrid", tok, model_config("gpt2", tok), documents=True, causal_share=0.0,
                          mask_probability=0.5)
    blocks = text_blocks(tok, 32, 65)
    original, _, hidden = masked_rows(obj, blocks, 0)
    after_eos = torch.zeros_like(hidden)
    after_eos[:, 1:] = original[:, :-1] == tok.eos_token_id
    assert after_eos.any() and not (hidden & after_eos).any()
    assert (hidden & ~after_eos & selectable(tok, original)).float().sum() > 0.4 * selectable(tok, original).sum()


def test_loss_reads_only_labelled_positions_and_weights_parts_by_rows():
    tok = bpe()
    obj = hybrid(tok, causal_share=0.25)
    model = tiny_model("gpt2", tok)
    batch = obj.collate(text_blocks(tok, 8, 33), torch.Generator().manual_seed(0))
    causal, labels = batch["causal"], batch["labels"]
    seen = {}

    class Spy:  # the model, keeping its output so the test can read its gradient
        def __call__(self, **kw):
            seen["hidden"] = model(**kw)
            seen["hidden"].retain_grad()
            return seen["hidden"]

        def __getattr__(self, name):
            return getattr(model, name)

    loss, metrics = obj.loss(Spy(), batch)
    loss.backward()
    grad = seen["hidden"].grad.abs().sum(-1)
    assert (grad[labels == -100] == 0).all() and (grad[labels != -100] > 0).all()
    with torch.no_grad():  # reference: plain cross-entropy of the full logits, each part's mean by its rows
        logits = model.logits(model(batch["input_ids"], causal=causal))
        clm = F.cross_entropy(logits[causal].flatten(0, 1), labels[causal].flatten())
        mntp = F.cross_entropy(logits[~causal].flatten(0, 1), labels[~causal].flatten())
    n_causal = causal.sum().item()
    assert abs(metrics["clm_loss"] - clm) < 1e-4 and abs(metrics["mntp_loss"] - mntp) < 1e-4
    assert abs(loss.item() - (n_causal * clm + (8 - n_causal) * mntp) / 8) < 1e-4
    assert metrics["clm_n_predicted"] == (labels[causal] != -100).sum()
    assert metrics["n_predicted"] == (labels != -100).sum()


def test_cloze_reads_both_sides_from_the_position_before():
    tok = bpe()
    obj, model = hybrid(tok), tiny_model("gpt2", tok).eval()
    window = text_blocks(tok, 1, 12)[0].tolist()
    inputs, index = obj.cloze_batch([window], [5], "both")
    assert inputs["input_ids"][0, 5] == tok.mask_token_id and index.tolist() == [4]
    later = window[:8] + [window[9]] + window[9:]  # only a token after the hidden one changes
    a, b = obj.cloze_logits(model, [window], [5], "both"), obj.cloze_logits(model, [later], [5], "both")
    assert not torch.allclose(a, b)  # bidirectional: the right context reaches position 4


def test_both_losses_fall_on_a_tiny_model():
    tok = bpe()
    obj = hybrid(tok, causal_share=0.5)
    batch = obj.collate(text_blocks(tok, 4, 33), torch.Generator().manual_seed(0))
    model = tiny_model("gpt2", tok)
    parts = []
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(9):
        loss, metrics = obj.loss(model, batch)
        parts.append((metrics["clm_loss"].item(), metrics["mntp_loss"].item()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts[-1][0] < parts[0][0] - 0.5 and parts[-1][1] < parts[0][1] - 0.5, parts
    losses = train_steps(obj, tiny_model("llama", tok), batch)  # llama blocks train too
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.parametrize("options, words", [({"causal_share": 1.5}, "causal_share=1.5"),
                                            ({"mask_probability": 0.0}, "mask_probability=0.0"),
                                            ({"max_span": 0}, "max_span=0"),
                                            ({"mask_replace": 0.95, "random_replace": 0.1}, "random_replace=1.05")])
def test_bad_options_are_one_line_errors(options, words):
    with pytest.raises(UserError, match=words) as err:
        hybrid(**options)
    assert "\n" not in str(err.value)


def test_only_decoders():
    tok = bpe()
    with pytest.raises(UserError, match="objective 'hybrid' cannot train an encoder"):
        build_objective("hybrid", tok, model_config("bert", tok))
