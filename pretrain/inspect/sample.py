r"""A qualitative look at a trained model, printed at the end of a recipe: fill-mask (encoder), a greedy
continuation (decoder), a reconstruction of a corrupted input (encoder-decoder). Greedy, no KV cache: these are
sanity checks on a few dozen tokens, not a generation API.

Everything shown is decoded text, never a vocabulary's internal symbols (byte-level BPE's "Ġ" and "Ċ", Metaspace's
"▁"): a fill-mask candidate is the repr of `token_text`, what the token adds to running text (' the', '\n', 'ing'),
and a text field that decodes to nothing visible says so in words ("(empty: the model produced only </s>)")."""
from __future__ import annotations

import codecs
from functools import lru_cache

import torch

from ..data.order import generator, get_blocks


@lru_cache(maxsize=1)
def _byte_of_char() -> dict:
    """Byte-level BPE's printable stand-in character -> the byte it stands for (GPT-2's bytes_to_unicode, inverted)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(kept), 0
    for b in range(256):
        if b not in kept:
            kept.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(kept, chars)}


def _hex_bytes(error):  # a codecs error handler: an undecodable byte shows as <0xE2>, sentencepiece's byte notation
    return "".join(f"<0x{b:02X}>" for b in error.object[error.start:error.end]), error.end


codecs.register_error("pretrain-hex-bytes", _hex_bytes)
_ANCHOR = "a"  # a plain token to decode a token after, so the decoder treats it as mid-text (keeps its space)


def token_text(tokenizer, token_id) -> str:
    r"""What one token adds to running text, through the tokenizer's own decoder: byte-level BPE 'Ġthe' -> ' the',
    'Ċ' -> '\n'; Unigram/Metaspace '▁the' -> ' the'; WordPiece 'the' -> ' the' and its continuation piece '##ing'
    -> 'ing'. So in every kind a leading space means the token starts a new word and its absence means it goes on
    from the text before (punctuation, a word piece, or, in byte-level BPE, a word at the start of a line).

    The token is decoded after an anchor token and the anchor's text removed, because decoders drop the word-start
    space of the first token of a text (Metaspace, WordPiece) that would otherwise hide ' the' vs 'the'. Special
    tokens show as themselves ('</s>', '[MASK]'). A byte-level piece of a multi-byte character, which decodes to
    '\ufffd', shows its bytes instead: 'ĠæĹ' -> ' <0xE6><0x97>'."""
    token_id = int(token_id)
    token = tokenizer.convert_ids_to_tokens(token_id)
    if token is None:
        return f"<id {token_id}>"
    if token_id in set(tokenizer.all_special_ids):
        return token
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    text = None
    if decoder is not None:
        lead, both = decoder.decode([_ANCHOR]), decoder.decode([_ANCHOR, token])
        if both.startswith(lead):
            text = both[len(lead):]
    if text is None:
        text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if "\ufffd" in text and "\ufffd" not in token:  # part of a character: show the bytes
        byte_of = _byte_of_char()
        if all(c in byte_of for c in token):
            return bytes(byte_of[c] for c in token).decode("utf-8", errors="pretrain-hex-bytes")
        return token  # e.g. a byte-fallback token, already written <0xE2>
    return text


def _decode(tokenizer, ids, skip_special=False) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special).replace("\n", " ").strip()


def _text(tokenizer, ids, who: str = "the model produced") -> str:
    """The decoded text of `ids` on one line (newlines as spaces). When nothing but framing tokens (pad, eos, bos)
    and whitespace is left, it says so in words, e.g. "(empty: the model produced only </s>)", instead of nothing."""
    ids = [int(i) for i in ids]
    framing = {getattr(tokenizer, f"{r}_token_id", None) for r in ("pad", "eos", "bos", "cls", "sep")} - {None}
    if _decode(tokenizer, [i for i in ids if i not in framing]):
        return _decode(tokenizer, ids)
    if not ids:
        return f"(empty: {who} no tokens)"
    special, runs = set(tokenizer.all_special_ids), []  # runs: the token texts run-length coded: '\n' x3, </s>
    for i in ids:
        shown = token_text(tokenizer, i) if i in special else repr(token_text(tokenizer, i))
        if runs and runs[-1][0] == shown:
            runs[-1][1] += 1
        else:
            runs.append([shown, 1])
    listed = ", ".join(s if n == 1 else f"{s} x{n}" for s, n in runs[:8]) + (", ..." if len(runs) > 8 else "")
    return f"(empty: {who} only {listed})"


@torch.no_grad()
def fill_mask(model, tokenizer, ids: torch.Tensor, n_masks: int = 2, top_k: int = 5) -> str:
    special = set(tokenizer.all_special_ids)
    candidates = [i for i in range(1, len(ids) - 1) if int(ids[i]) not in special and _wordy(tokenizer, ids[i])]
    if not candidates:
        candidates = [i for i in range(1, len(ids) - 1) if int(ids[i]) not in special]
    if not candidates or tokenizer.mask_token_id is None:
        return "(no maskable token)"
    picks = [candidates[(j + 1) * len(candidates) // (n_masks + 1)] for j in range(n_masks)]
    masked = ids.clone()
    masked[picks] = tokenizer.mask_token_id
    hidden = model(masked[None])
    logits = model.logits(hidden[0, picks]).float()
    lines = [f"  input:  {_text(tokenizer, masked, 'the input holds')}"]
    for pos, row in zip(picks, logits):
        top = row.softmax(-1).topk(top_k)
        shown = ", ".join(f"{token_text(tokenizer, t)!r} {p:.2f}"
                          for p, t in zip(top.values.tolist(), top.indices.tolist()))
        lines.append(f"  [MASK] (was {token_text(tokenizer, ids[pos])!r}): {shown}")
    return "\n".join(lines)


@torch.no_grad()
def continue_text(model, tokenizer, prompt: torch.Tensor, new_tokens: int = 32) -> str:
    ids = prompt.clone()
    limit = model.config.max_seq_len
    for _ in range(new_tokens):
        window = ids[-limit:]
        hidden = model(window[None])
        nxt = model.logits(hidden[0, -1]).argmax(-1)
        ids = torch.cat([ids, nxt[None]])
        if int(nxt) == tokenizer.eos_token_id:
            break
    return (f"  prompt:       {_text(tokenizer, prompt, 'the prompt holds')}\n"
            f"  continuation: {_text(tokenizer, ids[len(prompt):])}")


@torch.no_grad()
def reconstruct(model, tokenizer, batch: dict, max_new: int) -> str:
    keep = batch["attention_mask"][0].bool() if "attention_mask" in batch else slice(None)
    src = batch["input_ids"][0][keep]
    enc = model.encode(src[None])
    out = batch["decoder_input_ids"][0, :1]  # the objective's decoder start token
    for _ in range(min(max_new, model.config.max_seq_len - 1)):
        hidden = model.decode(out[None], enc)
        nxt = model.logits(hidden[0, -1]).argmax(-1)
        out = torch.cat([out, nxt[None]])
        if int(nxt) == tokenizer.eos_token_id:
            break
    labels = batch["labels"][0]
    target = labels[labels != -100]
    return (f"  corrupted input: {_text(tokenizer, src, 'the input holds')}\n"
            f"  target:          {_text(tokenizer, target, 'the target holds')}\n"
            f"  model output:    {_text(tokenizer, out[1:])}")


def _wordy(tokenizer, token_id) -> bool:
    """A whole word of 3+ letters (not a continuation piece): worth masking in a demo."""
    token = tokenizer.convert_ids_to_tokens(int(token_id))
    return not token.startswith("##") and len(token.lstrip("Ġ▁")) >= 3 and token.lstrip("Ġ▁").isalpha()


def pick_block(tokenizer, val_blocks, n: int = 50) -> torch.Tensor:
    """Of the first n validation blocks, the one richest in words (the built-in corpus also holds code)."""
    rows = get_blocks(val_blocks, torch.arange(min(n, len(val_blocks))))
    scores = [sum(_wordy(tokenizer, t) for t in row[:64]) for row in rows]
    return rows[max(range(len(scores)), key=scores.__getitem__)][None]


def sample(model, tokenizer, objective, val_blocks, seed: int = 0, length: int = 48) -> str:
    """The sample that fits the model's architecture, from the first validation block, on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    block = pick_block(tokenizer, val_blocks)
    try:
        arch = model.config.arch
        if model.config.head_outputs:
            return f"(no sample: the model's head gives {model.config.head_outputs} logit(s) per token, no words)"
        if arch == "encoder":
            return "fill-mask:\n" + fill_mask(model, tokenizer, block[0, :length].to(device))
        if arch == "decoder":
            return "greedy continuation:\n" + continue_text(model, tokenizer, block[0, :length // 2].to(device))
        batch = objective.collate(block, generator(seed, "sample"))
        batch = {k: v[:1].to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        n_target = int((batch["labels"][0] != -100).sum())
        return "reconstruction (greedy):\n" + reconstruct(model, tokenizer, batch, max_new=n_target + 8)
    finally:
        model.train(was_training)
