"""A qualitative look at a trained model, printed at the end of a recipe: fill-mask (encoder), a greedy
continuation (decoder), a reconstruction of a corrupted input (encoder-decoder). Greedy, no KV cache: these are
sanity checks on a few dozen tokens, not a generation API."""
from __future__ import annotations

import torch

from ..data.order import generator, get_blocks


def _decode(tokenizer, ids, skip_special=False) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special).replace("\n", " ").strip()


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
    lines = [f"  input:  {_decode(tokenizer, masked)}"]
    for pos, row in zip(picks, logits):
        top = row.softmax(-1).topk(top_k)
        shown = ", ".join(f"{tokenizer.convert_ids_to_tokens(int(t))!r} {p:.2f}"
                          for p, t in zip(top.values.tolist(), top.indices.tolist()))
        lines.append(f"  [MASK] (was {tokenizer.convert_ids_to_tokens(int(ids[pos]))!r}): {shown}")
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
    return (f"  prompt:       {_decode(tokenizer, prompt)}\n"
            f"  continuation: {_decode(tokenizer, ids[len(prompt):])}")


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
    return (f"  corrupted input: {_decode(tokenizer, src)}\n"
            f"  target:          {_decode(tokenizer, target)}\n"
            f"  model output:    {_decode(tokenizer, out[1:])}")


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
