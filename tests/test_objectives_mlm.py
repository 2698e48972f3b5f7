"""MLM: selection rate, 80/10/10 split, special tokens untouched, whole words never split, sparse loss trains."""
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from objectives_fixtures import (bpe, model_config, random_blocks, text_blocks, tiny_model, train_steps, unigram,
                                 wordpiece)

from objectives import build_objective
from objectives.words import word_start_table, word_starts


def stats(obj, blocks, seed=0):
    batch = obj.collate(blocks, torch.Generator().manual_seed(seed))
    selected = batch["labels"] != -100
    inputs = batch["input_ids"]
    return batch, selected, inputs


def test_selection_rate_and_replacement_split():
    tok = wordpiece()
    obj = build_objective("mlm", tok, model_config("bert", tok))
    blocks = random_blocks(tok, 64, 1024, special_rate=0.0)
    _, selected, inputs = stats(obj, blocks)
    assert abs(selected.float().mean().item() - 0.15) < 0.01
    n = selected.sum().item()
    masked = (inputs == tok.mask_token_id) & selected
    unchanged = (inputs == blocks) & selected
    randomized = selected & ~masked & ~unchanged
    assert abs(masked.sum().item() / n - 0.8) < 0.02
    assert abs(randomized.sum().item() / n - 0.1) < 0.02
    assert abs(unchanged.sum().item() / n - 0.1) < 0.02


def test_configurable_rates():
    tok = wordpiece()
    obj = build_objective("mlm", tok, model_config("bert", tok), mlm_probability=0.3, mask_replace=0.5,
                          random_replace=0.25)
    blocks = random_blocks(tok, 32, 1024, special_rate=0.0)
    _, selected, inputs = stats(obj, blocks)
    assert abs(selected.float().mean().item() - 0.3) < 0.01
    assert abs(((inputs == tok.mask_token_id) & selected).sum().item() / selected.sum().item() - 0.5) < 0.02


def test_special_tokens_never_selected_nor_inserted():
    tok = wordpiece()
    special = torch.tensor(tok.all_special_ids)
    blocks = random_blocks(tok, 16, 512, special_rate=0.3)
    # every selected token replaced by a random one: none may be special
    obj = build_objective("mlm", tok, model_config("bert", tok), mlm_probability=0.5, mask_replace=0.0,
                          random_replace=1.0)
    batch, selected, inputs = stats(obj, blocks)
    is_special = torch.isin(blocks, special)
    assert not (selected & is_special).any()
    assert not torch.isin(inputs[selected], special).any()
    assert torch.equal(inputs[is_special], blocks[is_special])


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), length=st.integers(1, 64), batch=st.integers(1, 4),
       p=st.floats(0.01, 0.99), mask_replace=st.floats(0, 1), whole_word=st.booleans(),
       special_rate=st.floats(0, 0.5))
def test_masking_invariants(seed, length, batch, p, mask_replace, whole_word, special_rate):
    tok = wordpiece()
    obj = build_objective("mlm", tok, model_config("bert", tok), mlm_probability=p, mask_replace=mask_replace,
                          random_replace=(1 - mask_replace) / 2, whole_word=whole_word)
    blocks = random_blocks(tok, batch, length, seed=seed, special_rate=special_rate)
    out = obj.collate(blocks.tolist(), torch.Generator().manual_seed(seed))
    labels, inputs = out["labels"], out["input_ids"]
    selected = labels != -100
    special_ids = torch.tensor(tok.all_special_ids)
    special = torch.isin(blocks, special_ids)
    assert torch.equal(labels[selected], blocks[selected])           # labels: originals, exactly where selected
    assert not (selected & special).any()                              # specials never selected
    assert torch.equal(inputs[~selected], blocks[~selected])          # unselected positions untouched
    changed = selected & (inputs != blocks)
    assert (~torch.isin(inputs[changed], special_ids) | (inputs[changed] == tok.mask_token_id)).all()


def words_of(tok, ids):
    """Word index per position, from the tokenizer's word starts."""
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    return word_starts(ids, word_start_table(tok), special).long().cumsum(-1)


def test_whole_word_masking_never_splits_a_word():
    for tok in (wordpiece(), bpe()):
        obj = build_objective("mlm", tok, model_config("bert", tok), whole_word=True)
        blocks = text_blocks(tok, 8, 128)
        batch = obj.collate(blocks, torch.Generator().manual_seed(1))
        selected = batch["labels"] != -100
        special = torch.isin(blocks, torch.tensor(tok.all_special_ids))
        words = words_of(tok, blocks)
        multi = 0
        for row in range(blocks.shape[0]):
            for w in words[row].unique():
                at = (words[row] == w) & ~special[row]
                if at.any():
                    assert selected[row][at].all() or not selected[row][at].any()
                    multi += int(at.sum() > 1 and selected[row][at].all())
        assert multi > 0  # some multi-token word was masked whole
        assert abs(selected.float().mean().item() - 0.15) < 0.08


def test_word_starts_from_the_tokenizer_not_hashes():
    cases = [(wordpiece(), {"##ol": False, "word": True, ".": True}),
             (bpe(), {"Ġword": True, "as": False, "Ġ": True}),
             (unigram(), {"▁word": True, "▁": True})]
    for tok, expected in cases:
        table = word_start_table(tok)
        vocab = tok.get_vocab()
        for token, starts in expected.items():
            if token in vocab:
                assert bool(table[vocab[token]]) == starts, (token, starts)
        assert table[torch.tensor(tok.all_special_ids)].all()
    # a WordPiece continuation is not a start, whichever prefix the tokenizer uses
    wp = wordpiece()
    pieces = [t for t in wp.get_vocab() if t.startswith("##")]
    assert pieces and not word_start_table(wp)[[wp.get_vocab()[t] for t in pieces]].any()


def test_sparse_loss_matches_dense_cross_entropy_on_selected():
    tok = wordpiece()
    obj = build_objective("mlm", tok, model_config("bert", tok))
    model = tiny_model("bert", tok).eval()
    batch = obj.collate(text_blocks(tok, 4, 64), torch.Generator().manual_seed(0))
    loss, metrics = obj.loss(model, batch)
    hidden = model(batch["input_ids"])
    logits = model.logits(hidden)
    dense = F.cross_entropy(logits.view(-1, logits.shape[-1]), batch["labels"].view(-1))
    selected = batch["labels"] != -100
    assert torch.allclose(loss, dense, atol=1e-5)
    assert metrics["n_predicted"].item() == selected.sum().item()
    accuracy = (logits.argmax(-1)[selected] == batch["labels"][selected]).float().mean()
    assert torch.allclose(metrics["accuracy"], accuracy)
    assert set(metrics) >= {"loss", "accuracy", "n_predicted"} and all(m.dim() == 0 for m in metrics.values())


def test_mlm_trains_a_tiny_bert():
    tok = wordpiece()
    obj = build_objective("mlm", tok, model_config("bert", tok), mlm_probability=0.3)
    model = tiny_model("bert", tok)
    batch = obj.collate(text_blocks(tok, 8, 64), torch.Generator().manual_seed(0))
    losses = train_steps(obj, model, batch)
    assert losses[-1] < losses[0] - 0.5, losses
