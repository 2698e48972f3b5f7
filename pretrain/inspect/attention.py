"""One layer's attention weights (all heads) of a model on a sentence, as a grid of heatmaps labelled with the
tokens (`pretrain attention RUN --text "..."`, and the comparison report).

An encoder shows its bidirectional self-attention, a decoder its causal triangle, an encoder-decoder three rows:
encoder self-attention, decoder self-attention and decoder cross-attention (the decoder reads the sentence
teacher-forced behind its start token, i.e. it is asked to reproduce the sentence). SDPA returns no weights, so the
weights come from models.inspect.attention_weights, an explicit softmax path used only for inspection.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.inspect import attention_weights

from ..errors import UserError
from .heatmaps import render_attention

DEFAULT_TEXT = "The function returns a new list containing the items of the sequence in sorted order."


def token_labels(tokenizer, ids) -> list[str]:
    """Readable token strings: each id decoded alone, a leading space shown as '▁'."""
    out = []
    for i in ids:
        text = tokenizer.decode([int(i)], skip_special_tokens=False)
        text = text.replace("\n", "\\n")
        out.append(("▁" + text[1:]) if text.startswith(" ") else text or "∅")
    return out


def sentence_inputs(model, tokenizer, text: str, max_tokens: int = 48):
    """(input_ids [1, T], decoder_input_ids [1, T+1] or None) for the sentence, as the attention picture uses it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    if not ids:
        raise UserError("--text is empty after tokenization; give a sentence")
    ids = ids[: model.config.max_seq_len - 1]
    input_ids = torch.tensor([ids])
    if model.config.arch != "encoder-decoder":
        return input_ids, None
    start = model.config.decoder_start_token_id
    start = start if start is not None else (tokenizer.pad_token_id or 0)
    return input_ids, torch.tensor([[start] + ids])


def attention_picture(model, tokenizer, text: str, path, layer: int = -1, title: str | None = None,
                      max_tokens: int = 48) -> str:
    """Render one layer's attention of `model` on `text` to `path` (PNG); returns the path."""
    stacks = [getattr(model, s, None) for s in ("encoder", "decoder")]
    n_layers = min(len(s.layers) for s in stacks if s is not None)
    if not -n_layers <= layer < n_layers:
        raise UserError(f"--layer {layer} is out of range: the model has {n_layers} layers per stack; "
                        f"use 0..{n_layers - 1} or -1 for the last")
    input_ids, decoder_ids = sentence_inputs(model, tokenizer, text, max_tokens)
    maps = attention_weights(model, input_ids, decoder_input_ids=decoder_ids, layer=layer)
    if not maps:
        raise UserError("the model recorded no attention weights (no attention layers?)")
    enc_tokens = token_labels(tokenizer, input_ids[0])
    dec_tokens = token_labels(tokenizer, decoder_ids[0]) if decoder_ids is not None else enc_tokens
    query, key = {}, {}
    for name in maps:
        if name.startswith("encoder"):
            query[name], key[name] = enc_tokens, enc_tokens
        elif name.endswith("cross"):
            query[name], key[name] = dec_tokens, enc_tokens
        else:
            query[name], key[name] = dec_tokens, dec_tokens
    label = "last" if layer == -1 else str(layer)
    title = title or f"attention, layer {label}"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return render_attention(maps, query, key, title, str(path))
