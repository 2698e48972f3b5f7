"""Document masking: inside a packed row no output of one document depends on another, positions restart at each
document, and the causal LM's batches say so position by position. (Span corruption and infilling:
test_documents_seq2seq.py.)"""
import json

import pytest
import torch
import torch.nn.functional as F

from models import ModelConfig, Transformer
from models.attention import positions_in_documents
from objectives import build_objective
from objectives.base import model_inputs
from objectives_fixtures import bpe
from train_fixtures import family_run, write_corpus

V = 50
SMALL = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, vocab_size=V, max_seq_len=32)
# two rows of 12: three documents and one padding position; two documents (the first one long)
SEGMENTS = torch.tensor([[0] * 4 + [1] * 5 + [2] * 2 + [-1], [0] * 7 + [1] * 5])
DECODER_SEGMENTS = torch.tensor([[0] * 3 + [1] * 4 + [2] * 3 + [-1] * 2, [0] * 5 + [1] * 5 + [-1] * 2])
PRESETS = ["bert", "gpt2", "llama", "bart", "t5", "transformer"]  # learned, rotary, relative, sinusoidal positions


def build(preset, train=False):
    extra = {"head_dim": 8} if preset == "t5" else {}
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset, **SMALL, **extra, dropout=0.1 if train else 0.0)
    return Transformer(cfg).train(train)


def ids(shape, seed):
    return torch.randint(3, V, shape, generator=torch.Generator().manual_seed(seed))


def forward(model, x, dec=None, segments=SEGMENTS, decoder_segments=DECODER_SEGMENTS):
    torch.manual_seed(1)  # the same dropout masks in every forward: outputs move only with the input
    if model.config.arch == "encoder-decoder":
        return model(x, decoder_input_ids=dec, segment_ids=segments, decoder_segment_ids=decoder_segments)
    return model(x, segment_ids=segments)


def moved(a, b):
    return (a - b).abs().amax(dim=-1) > 1e-6


def expected_moves(segments, t_row, t, causal):
    """Bool[B, T]: the positions a change of token (t_row, t) may and must move."""
    out = torch.zeros(segments.shape, dtype=torch.bool)
    same = segments[t_row] == segments[t_row, t]
    if causal:
        same &= torch.arange(segments.shape[1]) >= t
    out[t_row] = same
    return out


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-dropout"])
def test_a_token_moves_exactly_its_own_document(preset, train):
    """Change each real token in turn: the outputs that move are exactly those of its document (from it on, in a
    causal stack); padding outputs are never used and not checked."""
    model = build(preset, train)
    seq2seq = model.config.arch == "encoder-decoder"
    x, dec = ids(SEGMENTS.shape, 1), ids(DECODER_SEGMENTS.shape, 2) if seq2seq else None
    base = forward(model, x, dec)
    side_segments = DECODER_SEGMENTS if seq2seq else SEGMENTS
    real = side_segments >= 0
    for row, t in (SEGMENTS >= 0).nonzero().tolist():  # encoder (or the only stack) tokens
        x2 = x.clone()
        x2[row, t] = (x2[row, t] + 1) % V
        got = moved(base, forward(model, x2, dec))
        if seq2seq:  # cross-attention: every decoder position of the same document, no other
            want = torch.zeros_like(got)
            want[row] = DECODER_SEGMENTS[row] == SEGMENTS[row, t]
        else:
            want = expected_moves(SEGMENTS, row, t, causal=model.config.arch == "decoder")
        assert torch.equal(got & real, want & real), f"{preset}: input token ({row}, {t})"
    if seq2seq:
        for row, t in (DECODER_SEGMENTS >= 0).nonzero().tolist():
            dec2 = dec.clone()
            dec2[row, t] = (dec2[row, t] + 1) % V
            got = moved(base, forward(model, x, dec2))
            want = expected_moves(DECODER_SEGMENTS, row, t, causal=True)
            assert torch.equal(got & real, want & real), f"{preset}: decoder token ({row}, {t})"


@pytest.mark.parametrize("preset", PRESETS)
def test_document_packed_after_another_equals_it_alone(preset):
    """The hidden states of document 1 of row 0 (positions 4..8) equal those of that document alone at the start
    of a row without segment ids: positions restart, nothing leaks."""
    model = build(preset)
    seq2seq = model.config.arch == "encoder-decoder"
    x, dec = ids(SEGMENTS.shape, 1), ids(DECODER_SEGMENTS.shape, 2) if seq2seq else None
    with torch.no_grad():
        packed = forward(model, x, dec)
        if seq2seq:
            alone = model(x[:1, 4:9], decoder_input_ids=dec[:1, 3:7])
            assert torch.allclose(packed[0, 3:7], alone[0], atol=1e-5)
        else:
            alone = model(x[:1, 4:9])
            assert torch.allclose(packed[0, 4:9], alone[0], atol=1e-5)


@pytest.mark.parametrize("preset", PRESETS)
def test_padding_segments_never_make_nan(preset):
    """Padding (segment -1) queries see every key, so no attention row is empty; loss and gradients are finite."""
    model = build(preset, train=True)
    seq2seq = model.config.arch == "encoder-decoder"
    x, dec = ids(SEGMENTS.shape, 1), ids(DECODER_SEGMENTS.shape, 2) if seq2seq else None
    hidden = forward(model, x, dec)
    assert torch.isfinite(hidden).all()
    hidden.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_positions_restart_at_every_document():
    assert positions_in_documents(SEGMENTS).tolist() == [
        [0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 0], [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4]]


def test_seq2seq_needs_both_segment_sides():
    model = build("t5")
    with pytest.raises(ValueError, match="both segment_ids and decoder_segment_ids"):
        model(ids(SEGMENTS.shape, 1), decoder_input_ids=ids(DECODER_SEGMENTS.shape, 2), segment_ids=SEGMENTS)


# ---- the causal LM's batches ------------------------------------------------------------------------------------
def clm(preset="gpt2", documents=True, **kw):
    tok = bpe()
    cfg = ModelConfig.preset(preset, **{**SMALL, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
                                        "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id, **kw})
    return build_objective("clm", tok, cfg, documents=documents), cfg


def test_clm_segments_and_labels_position_by_position():
    objective, _ = clm()
    e, p = objective.eos_id, objective.pad_id
    block = torch.tensor([[11, 12, e, 21, 22, 23, e, 31, 32], [41, 42, 43, e, 51, e, p, p, p]])
    batch = objective.collate(block, torch.Generator().manual_seed(0))
    assert batch["input_ids"].tolist() == block[:, :-1].tolist()
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1, 1, 1, 2], [0, 0, 0, 0, 1, 1, -1, -1]]
    # the first token of a document is no target: only another document precedes it
    assert batch["labels"].tolist() == [[12, e, -100, 22, 23, e, -100, 32], [42, 43, e, -100, e, -100, -100, -100]]
    plain = build_objective("clm", objective.tokenizer, objective.model_cfg).collate(block, torch.Generator())
    assert "segment_ids" not in plain and plain["labels"][0, 2] == 21


@pytest.mark.parametrize("preset", ["gpt2", "llama"])
def test_clm_loss_of_a_document_packed_after_another_equals_it_alone(preset):
    objective, cfg = clm(preset)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    e, p = objective.eos_id, objective.pad_id
    a, b = list(range(10, 17)), list(range(20, 29))
    packed = torch.tensor([a + [e] + b + [e] + [30, 31, 32]])
    alone = torch.tensor([b + [e] + [p] * (packed.shape[1] - len(b) - 1)])

    def token_losses(block):
        batch = objective.collate(block, torch.Generator())
        with torch.no_grad():
            hidden = model(**model_inputs(batch, "input_ids", "segment_ids"))
            losses = F.cross_entropy(model.logits(hidden)[0], batch["labels"][0], reduction="none")
        return losses[batch["labels"][0] != -100]

    packed_losses, alone_losses = token_losses(packed), token_losses(alone)
    start = len(a)  # b's terms in the packed row: after a's len(a) terms (the first token of b is none)
    assert torch.allclose(packed_losses[start:start + len(b)], alone_losses, atol=1e-5)


def test_prefix_lm_splits_every_document_on_its_own():
    tok = bpe()
    cfg = ModelConfig.preset("bart", **{**SMALL, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
                                        "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id,
                                        "decoder_start_token_id": tok.eos_token_id})
    objective = build_objective("clm", tok, cfg, documents=True)
    e = objective.eos_id
    g = torch.Generator().manual_seed(0)
    rng = torch.Generator().manual_seed(1)
    splits = []
    for _ in range(60):
        docs = [torch.randint(10, 200, (int(n),), generator=rng).tolist() + [e]
                for n in torch.randint(0, 9, (12,), generator=rng)]
        stream = [t for d in docs for t in d][:25]
        batch = objective.collate(torch.tensor([stream]), g)
        assert batch["input_ids"].shape[1] == 24 and batch["labels"].shape[1] == 24
        enc, dec_seg, seg = batch["input_ids"][0], batch["decoder_segment_ids"][0], batch["segment_ids"][0]
        labels, previous = batch["labels"][0], batch["decoder_input_ids"][0]
        pieces = [d for d in objective.documents_of(torch.tensor(stream)) if d[1] - d[0] >= 2]
        assert int(seg.max()) + 1 == len(pieces) and set(dec_seg[dec_seg >= 0].tolist()) == set(range(len(pieces)))
        for k, (a, b, _) in enumerate(pieces):
            prefix, target = enc[seg == k].tolist(), labels[dec_seg == k].tolist()
            assert prefix + target == stream[a:b] and prefix and target
            splits.append((len(prefix) - 1) / max(b - a - 2, 1))
            shifted = previous[dec_seg == k].tolist()
            assert shifted == [objective.decoder_start_id] + target[:-1]
        assert (batch["attention_mask"][0].bool() == (seg >= 0)).all()
    splits = torch.tensor(splits)
    assert 0.4 < splits.mean() < 0.6 and splits.min() == 0 and splits.max() == 1  # uniform over 1 .. n - 1


def test_objective_without_document_support_is_refused():
    import toy_objective  # noqa: F401  (registers "toy-denoise", which knows nothing of documents)
    from models.errors import UserError
    from objectives_fixtures import wordpiece

    tok = wordpiece()
    cfg = ModelConfig.preset("bert", **{**SMALL, "vocab_size": len(tok)})
    assert build_objective("toy-denoise", tok, cfg).documents is False
    with pytest.raises(UserError, match="cannot keep attention inside documents"):
        build_objective("toy-denoise", tok, cfg, documents=True)


# ---- a real run: the option end to end, packing statistics, export parity on one document -----------------------
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "bart", "t5"])
def test_document_masked_run_exports_with_parity(family, tmp_path):
    import transformers

    from pretrain.export.to_hf import export_run
    from pretrain.train.eval_run import evaluate_run
    from pretrain.train.saved_run import load_run_model

    run = family_run(tmp_path / "run", family, write_corpus(tmp_path, 80), tmp_path / "cache", 3,
                     **{"--objective.document_masking": "true"})
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    packing = [r for r in rows if r["split"] == "packing"]
    assert len(packing) == 1 and packing[0]["documents_per_block"] > 1 and packing[0]["real_token_fraction"] == 1
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if r["split"] == "train")
    on, off = evaluate_run(str(run), 2), evaluate_run(str(run), 2, document_masking=False)
    assert on["document_masking"] is True and off["document_masking"] is False and on["loss"] != off["loss"]
    model, cfg, tokenizer, _ = load_run_model(run)
    out = export_run(run, tmp_path / "exported", log=lambda m: None)
    hf = getattr(transformers, {"encoder": "AutoModelForMaskedLM", "decoder": "AutoModelForCausalLM",
                                "encoder-decoder": "AutoModelForSeq2SeqLM"}[cfg.arch]).from_pretrained(out).eval()
    x = tokenizer(["the cat sees the river every morning"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    batch = {"input_ids": x}
    if cfg.arch == "encoder-decoder":
        batch["decoder_input_ids"] = torch.cat([torch.tensor([[cfg.decoder_start_token_id]]), x[:, :-1]], 1)
    with torch.no_grad():
        theirs = hf(**batch).logits
        ours = model.logits(model(**batch))
        segments = {"segment_ids": torch.zeros_like(x)}
        if cfg.arch == "encoder-decoder":
            segments["decoder_segment_ids"] = torch.zeros_like(batch["decoder_input_ids"])
        ours_one_document = model.logits(model(**batch, **segments))
    assert (ours - theirs).abs().max() < 1e-4 and (ours_one_document - theirs).abs().max() < 1e-4


def test_packing_statistics_count_documents_padding_and_lengths():
    from pretrain.data.packing import packing_stats
    from pretrain.data.shards import TokenBlocks

    e, p = 2, 0
    blocks = TokenBlocks(torch.tensor([[5, 6, e, 7, 8, 9, e, 4], [4, 4, 4, e, 5, 5, e, p],
                                       [6, 6, 6, 6, 6, 6, 6, 6]], dtype=torch.int32).numpy())
    stats = packing_stats(blocks, eos_id=e, pad_id=p, rows_per_chunk=2)  # chunks split the blocks 2 + 1
    assert stats["documents_per_block"] == pytest.approx((3 + 2 + 1) / 3)
    assert stats["real_token_fraction"] == pytest.approx(23 / 24)
    assert stats["mean_document_length"] == pytest.approx(23 / 4)
