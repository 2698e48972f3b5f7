"""Per-row attention of a decoder (the GPT-BERT hybrid's batches): a causal row attends to earlier positions, a masked
row to its whole document, position by position, through SDPA and FlexAttention alike; rows given as all causal
compute what the no-mask fast path computes."""
import warnings

import pytest
import torch
from objectives_fixtures import bpe, model_config, text_blocks, tiny_model
from torch.nn.attention.flex_attention import create_mask

from models.attention import build_mask
from models.flex import document_block_mask
from objectives import build_objective


def attention_weights(model, batch):
    """The first layer's attention weights [B, H, T, T] for the batch's model inputs."""
    attn = model.decoder.layers[0].self_attn
    attn.record_weights = True
    keys = ("input_ids", "attention_mask", "segment_ids", "causal")
    with torch.no_grad():
        model(**{k: batch[k] for k in keys if k in batch})
    attn.record_weights = False
    return attn.last_weights


def documents_of(block, eos):
    """Long [B, L]: document of each position, a document ending with its EOS (computed here from the tokens)."""
    is_eos = (block == eos).long()
    return is_eos.cumsum(1) - is_eos


@pytest.mark.parametrize("documents", [False, True], ids=["one-sequence", "documents"])
def test_each_row_attends_as_its_kind_position_by_position(documents):
    tok = bpe()
    obj = build_objective("hybrid", tok, model_config("gpt2", tok), documents=documents, causal_share=0.5)
    blocks = text_blocks(tok, 6, 41)
    blocks[-1, 30:] = tok.pad_token_id  # the corpus's last block: padded at its end
    batch = obj.collate(blocks, torch.Generator().manual_seed(1))
    causal = batch["causal"]
    assert causal.any() and (~causal).any() and "attention_mask" in batch
    seen = attention_weights(tiny_model("gpt2", tok).eval(), batch) > 0  # [B, H, T, T]
    length = blocks.shape[1] - 1
    doc = documents_of(blocks[:, :-1], tok.eos_token_id)
    real = blocks[:, :-1] != tok.pad_token_id
    i, j = torch.arange(length)[:, None], torch.arange(length)[None, :]
    allowed = real[:, None, :] & ((j <= i) | ~causal[:, None, None])  # [B, query, key]
    if documents:
        allowed &= doc[:, :, None] == doc[:, None, :]
        assert (doc[:, :, None] != doc[:, None, :]).any()
    queries = real[:, :, None].expand_as(allowed)  # a padding query's output is never read
    for head in range(seen.shape[1]):
        assert torch.equal(seen[:, head][queries], allowed[queries])


def test_rows_all_causal_equal_the_fast_path():
    tok = bpe()
    model = tiny_model("gpt2", tok).eval()
    ids = text_blocks(tok, 3, 20)
    with torch.no_grad():
        fast = model(ids)
        rows = model(ids, causal=torch.ones(3, dtype=torch.bool))
        mixed = model(ids, causal=torch.tensor([True, False, True]))
    assert (fast - rows).abs().max() < 1e-6
    assert (fast[[0, 2]] - mixed[[0, 2]]).abs().max() < 1e-6 and (fast[1] - mixed[1]).abs().max() > 1e-3


def test_causal_rows_refused_for_other_shapes():
    tok = bpe()
    with pytest.raises(ValueError, match="decoder models"):
        tiny_model("bert", tok)(text_blocks(tok, 2, 8), causal=torch.ones(2, dtype=torch.bool))


SEGMENTS = torch.tensor([[0] * 4 + [1] * 5 + [2] * 2 + [-1], [0] * 7 + [1] * 5, [0] * 3 + [1] * 3 + [-1] * 6])
ROWS = torch.tensor([True, False, False])


@pytest.mark.parametrize("padding", [False, True], ids=["no-key-padding", "key-padding"])
def test_flex_block_mask_with_causal_rows_equals_the_boolean_mask(padding):
    key_padding = (SEGMENTS >= 0) if padding else None
    want, _ = build_mask(key_padding, 12, 12, True, None, SEGMENTS, SEGMENTS, ROWS)
    got = create_mask(document_block_mask(SEGMENTS, SEGMENTS, key_padding, True, ROWS).mask_mod, 3, 1, 12, 12,
                      device="cpu")
    assert torch.equal(got, want.expand_as(got))
    tri = torch.ones(12, 12, dtype=torch.bool).tril()
    assert torch.equal(got[0, 0] & tri, got[0, 0]) and not torch.equal(got[1, 0] & tri, got[1, 0])


def test_model_with_causal_rows_is_the_same_through_flex_and_sdpa():
    tok = bpe()
    model = tiny_model("llama", tok).eval()
    x = torch.randint(5, len(tok), SEGMENTS.shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for kernel in ("sdpa", "flex"):
        model.use_attention_kernel(kernel)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # uncompiled flex_attention warns that it is the slow reference path
            out[kernel] = model(x, segment_ids=SEGMENTS, causal=ROWS)
    assert (out["sdpa"] - out["flex"])[SEGMENTS >= 0].abs().max() < 1e-5
