r"""A qualitative look at a trained model, printed at the end of a recipe: fill-mask (encoder), a sampled
continuation (decoder), a sampled reconstruction of a corrupted input (encoder-decoder), seeded. No KV cache: these
are sanity checks on a few dozen tokens, not a generation API.

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


def _texts(tokenizer, ids) -> list[str]:
    return [token_text(tokenizer, i) for i in ids]


def _starts_word(texts: list[str], special: list[bool], i: int) -> bool:
    """Whether token i begins a word (or is punctuation): its text opens with a space or a non-alphanumeric, or it
    follows a special token, whitespace or punctuation (byte-level BPE writes a word at a line start without a
    space). A continuation piece (WordPiece '##ing', BPE 'ing' after 'runn') does not."""
    text = texts[i]
    if i == 0 or special[i] or special[i - 1] or not text or not text[0].isalnum():
        return True
    before = texts[i - 1]
    return not before or not before[-1].isalnum()


def word_spans(tokenizer, ids) -> list[tuple[int, int]]:
    """(first, end) token positions of each alphabetic word inside the text (not touching its first or last token):
    a word start followed by continuation pieces up to the next word start or punctuation."""
    texts, special = _texts(tokenizer, ids), [int(i) in set(tokenizer.all_special_ids) for i in ids]
    starts = [i for i in range(len(ids)) if _starts_word(texts, special, i)] + [len(ids)]
    return [(i, j) for i, j in zip(starts, starts[1:])
            if 1 <= i and j < len(ids) and not special[i] and "".join(texts[i:j]).strip().isalpha()]


def whole_words(tokenizer, ids, min_letters: int = 3) -> list[int]:
    """Positions of the tokens that are each a whole word of `min_letters`+ letters inside the text: masking one
    hides exactly one word, never a piece of one."""
    texts = _texts(tokenizer, ids)
    return [i for i, j in word_spans(tokenizer, ids) if j == i + 1 and len(texts[i].strip()) >= min_letters]


def _ends_sentence(text: str) -> bool:
    return text.rstrip(" ").endswith((".", "!", "?", "\n"))


def sentence_window(tokenizer, row: torch.Tensor, length: int) -> torch.Tensor:
    """At most `length` tokens of `row` that start where a sentence starts (after '.', '!', '?', a newline or a
    special token; packed blocks begin anywhere, often mid-word) and end after the last sentence end in reach, else
    before the last word start, so the shown text is never cut inside a word."""
    texts, special = _texts(tokenizer, row), [int(i) in set(tokenizer.all_special_ids) for i in row]
    starts = [i for i in range(1, len(row)) if not special[i] and texts[i].strip()[:1].isalpha()
              and _starts_word(texts, special, i) and (special[i - 1] or _ends_sentence(texts[i - 1]))]
    first = starts[0] if starts else 0
    last = min(first + length, len(row))
    if last < len(row):  # cut at a boundary: after a sentence end, else before a word start
        ends = [j for j in range(first + 2, last + 1) if _ends_sentence(texts[j - 1])]
        cuts = ends or [j for j in range(first + 2, last) if _starts_word(texts, special, j)]
        last = cuts[-1] if cuts and cuts[-1] > first + length // 2 else last
    return row[first:last]


@torch.no_grad()
def fill_mask(model, tokenizer, ids: torch.Tensor, n_masks: int = 2, top_k: int = 5, seed: int = 0) -> str:
    """Hide `n_masks` whole words at positions drawn with `seed` (never a piece of a word, never picked by hand)
    and show the model's top_k candidates for each [MASK]. Words that are one token of 3+ letters are preferred;
    where there are none (a tiny vocabulary) every piece of the drawn words is hidden."""
    if tokenizer.mask_token_id is None:
        return "(no maskable token)"
    candidates = [(i, i + 1) for i in whole_words(tokenizer, ids)] or word_spans(tokenizer, ids)
    if not candidates:
        return "(no whole word to mask)"
    order = torch.randperm(len(candidates), generator=generator(seed, "fill-mask")).tolist()
    picks = sorted(p for k in order[:n_masks] for p in range(*candidates[k]))
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
def continue_text(model, tokenizer, prompt: torch.Tensor, new_tokens: int = 32, top_k: int = 40,
                  seed: int = 0) -> str:
    """Continue `prompt` by sampling each token from the model's top_k (seeded, so the sample is reproducible).
    Sampling rather than greedy: a briefly trained model's single likeliest token is often a newline, forever."""
    ids, gen = prompt.clone(), generator(seed, "continue")
    limit = model.config.max_seq_len
    for _ in range(new_tokens):
        window = ids[-limit:]
        hidden = model(window[None])
        logits = model.logits(hidden[0, -1]).float().cpu()
        top = logits.topk(min(top_k, logits.numel()))
        nxt = top.indices[torch.multinomial(top.values.softmax(-1), 1, generator=gen)].to(ids.device)
        ids = torch.cat([ids, nxt])
        if int(nxt) == tokenizer.eos_token_id:
            break
    return (f"  prompt:       {_text(tokenizer, prompt, 'the prompt holds')}\n"
            f"  continuation: {_text(tokenizer, ids[len(prompt):])}")


@torch.no_grad()
def reconstruct(model, tokenizer, batch: dict, max_new: int, min_new: int = 0, top_k: int | None = None,
                seed: int = 0) -> str:
    """Decoding of the corrupted input, greedy or (top_k) sampled from the model's top_k, seeded: a briefly trained
    span-corruption decoder's likeliest token after each sentinel is a space, so greedy shows no words. The pad
    token (T5's decoder start) is never an output, and the end of text is held back for the first `min_new` tokens:
    a briefly trained model's likeliest first token is often </s>, which would show nothing."""
    gen = generator(seed, "reconstruct")
    keep = batch["attention_mask"][0].bool() if "attention_mask" in batch else slice(None)
    src = batch["input_ids"][0][keep]
    enc = model.encode(src[None])
    out = batch["decoder_input_ids"][0, :1]  # the objective's decoder start token
    for step in range(min(max_new, model.config.max_seq_len - 1)):
        hidden = model.decode(out[None], enc)
        scores = model.logits(hidden[0, -1]).float()
        banned = {tokenizer.pad_token_id} - {tokenizer.eos_token_id}
        if step < min_new:
            banned.add(tokenizer.eos_token_id)
        scores[sorted(banned - {None})] = float("-inf")
        if top_k:
            top = scores.cpu().topk(min(top_k, scores.numel()))
            nxt = top.indices[torch.multinomial(top.values.softmax(-1), 1, generator=gen)][0].to(out.device)
        else:
            nxt = scores.argmax(-1)
        out = torch.cat([out, nxt[None]])
        if int(nxt) == tokenizer.eos_token_id:
            break
    labels = batch["labels"][0]
    target = labels[labels != -100]
    return (f"  corrupted input: {_text(tokenizer, src, 'the input holds')}\n"
            f"  target:          {_text(tokenizer, target, 'the target holds')}\n"
            f"  model output:    {_text(tokenizer, out[1:])}")


def pick_block(tokenizer, val_blocks, n: int = 50) -> torch.Tensor:
    """Of the first n validation blocks, the one richest in whole words (the built-in corpus also holds code)."""
    rows = get_blocks(val_blocks, torch.arange(min(n, len(val_blocks))))
    scores = [len(whole_words(tokenizer, row[:64])) for row in rows]
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
            window = sentence_window(tokenizer, block[0], length)
            return "fill-mask:\n" + fill_mask(model, tokenizer, window.to(device), seed=seed)
        if arch == "decoder":
            prompt = sentence_window(tokenizer, block[0], length // 2)
            return (f"sampled continuation (top-40, seed {seed}):\n"
                    + continue_text(model, tokenizer, prompt.to(device), seed=seed))
        batch = objective.collate(block, generator(seed, "sample"))
        batch = {k: v[:1].to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        n_target = int((batch["labels"][0] != -100).sum())
        return (f"sampled reconstruction (top-40, seed {seed}):\n"
                + reconstruct(model, tokenizer, batch, max_new=n_target + 8, min_new=n_target // 2, top_k=40,
                              seed=seed))
    finally:
        model.train(was_training)
