"""A yardstick computed identically for every model: whole-word cloze accuracy on held-out text.

    windows = held_out_windows(data_cfg, tokenizer, window=64, n=256, seed=0)     # LongTensor [n, window]
    positions = cloze_positions(windows, tokenizer, min_context=16, seed=0)        # LongTensor [n] (-1: none)
    scores = cloze(model, objective, windows, positions)
    # {"both": {"accuracy", "top5", "nll", "n", "stderr"}, "left": {...}, "method": "..."}

Definition. The held-out text is the validation split of the corpus (documents no run trained on), tokenized with
the comparison's one shared tokenizer and cut into windows of `window` tokens. In each window one position is
drawn (seeded, so the same for every model) among the tokens that are a whole word on their own: alphabetic,
beginning a word, followed by a token that begins a word, with at least `min_context` tokens on the left and
`min_right` on the right. That token is hidden and each model predicts it the way its objective taught it to:
the objective answers (objectives.base.Objective.cloze_batch / cloze_logits: an encoder reads the mask token at
the position, a decoder predicts the next token, an encoder-decoder as its objective frames its input).

Two variants: "both" gives each model all the context it can natively use (the whole window; left-to-right models
can only use the left part), "left" truncates the window right after the hidden token for every model, so every
model has exactly the same information. Scores: top-1 accuracy, top-5 accuracy and the mean negative
log-likelihood (nats) of the hidden token; all comparable across models because the tokenizer is shared.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from objectives.words import word_start_table

from ..data.corpus import load_corpus
from ..data.packing import token_stream, validation_texts
from ..errors import UserError

DEFINITION = """\
**Whole-word cloze** on held-out text (the validation documents no run trained on), tokenized with the one shared
tokenizer and cut into windows of {window} tokens. In each window one position is drawn with a fixed seed (the same
positions and tokens for every model) among tokens that are a whole alphabetic word on their own, with at least
{min_context} tokens to the left and {min_right} to the right. The token is hidden and each model predicts it in the
way its objective was trained to (the *method* column): an encoder reads the mask token at that position, a
left-to-right model predicts the next token from the left context, an encoder-decoder reads the text with the hole
marked as its objective marks it and its decoder predicts the missing token. Scores: top-1 and top-5 accuracy and the
mean negative log-likelihood of the hidden token (nats; comparable because every model shares the tokenizer and the
target). Variant **both**: each model uses all the context it natively can (left-to-right models only the left).
Variant **left**: the window is cut right after the hidden token for every model, so all see exactly the same text."""

CAVEATS = """\
- In the *both* variant the bidirectional models see the right context and left-to-right models cannot: that is the
  native advantage of an objective, not a flaw of the other. The *left* variant removes it, but then puts
  bidirectional models out of their training distribution (a hole at the very end of the text), which favours
  left-to-right ones. Read both.
- A one-token hole is the exact question some objectives train on and a narrower one than others do (a mask that
  stands for a span); the notes under the table say which.
- Only whole single-token alphabetic words are hidden (frequent, short words dominate); punctuation and word
  pieces are never asked. The sample is small: the standard error sqrt(p(1-p)/n) is given next to each accuracy.
- Tiny models on a tiny budget: differences of a few points are within noise; the yardstick measures what these
  runs learned, not what the objectives can reach at scale."""


# ---- held-out text --------------------------------------------------------------------------------------------
def held_out_windows(data_cfg, tokenizer, window: int = 64, n: int = 256, seed: int = 0) -> torch.Tensor:
    """[min(n, available), window] token windows from the validation split of data_cfg (seeded choice, in order)."""
    _, val_texts = load_corpus(data_cfg)
    val_texts = validation_texts(val_texts)
    stream = np.asarray(token_stream(val_texts, tokenizer), dtype=np.int64) if len(val_texts) else np.zeros(0)
    available = len(stream) // window
    if available == 0:
        raise UserError(f"the validation split has {len(stream)} tokens, fewer than one yardstick window of "
                        f"{window}; raise data.validation_fraction or lower yardstick.window")
    windows = torch.from_numpy(stream[: available * window].reshape(available, window).copy())
    if available > n:
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(available, generator=g)[:n].sort().values
        windows = windows[keep]
    return windows


def eligible_table(tokenizer) -> torch.Tensor:
    """Bool over the vocabulary: the token may be hidden (non-special, alphabetic text, begins a word)."""
    starts = word_start_table(tokenizer)
    texts = tokenizer.backend_tokenizer.decode_batch([[v] for v in range(len(tokenizer))], skip_special_tokens=False)
    alpha = torch.tensor([t.strip().isalpha() for t in texts], dtype=torch.bool)
    ok = starts & alpha
    special = [s for s in tokenizer.all_special_ids if s < len(ok)]
    ok[special] = False
    return ok


def cloze_positions(windows: torch.Tensor, tokenizer, min_context: int = 16, min_right: int = 8,
                    seed: int = 0) -> torch.Tensor:
    """One seeded position per window (-1 where no token qualifies); see the module docstring."""
    ok = eligible_table(tokenizer)
    starts = word_start_table(tokenizer)
    special = torch.zeros(len(ok), dtype=torch.bool)
    special[[s for s in tokenizer.all_special_ids if s < len(ok)]] = True
    n, width = windows.shape
    eligible = ok[windows].clone()
    eligible[:, 1:-1] &= starts[windows[:, 2:]] | special[windows[:, 2:]]  # the next token begins a new word
    eligible[:, :min_context] = False
    eligible[:, max(width - min_right, 0):] = False
    g = torch.Generator().manual_seed(seed)
    draw = torch.rand(n, width, generator=g).masked_fill(~eligible, -1.0)
    positions = draw.argmax(dim=1)
    positions[~eligible.any(dim=1)] = -1
    return positions


# ---- scoring ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def cloze(model, objective, windows: torch.Tensor, positions: torch.Tensor, batch_size: int = 64,
          variants=("both", "left")) -> dict:
    """Cloze scores of one model, asked as its objective asks: per variant accuracy, top5, nll (nats), n, stderr
    (of accuracy); and the method."""
    modules = [m for m in (model, objective.module) if m is not None]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    valid = positions >= 0
    windows, positions = windows[valid], positions[valid]
    targets = windows[torch.arange(len(positions)), positions]
    out = {}
    try:
        for variant in variants:
            correct = top5 = nll = 0.0
            for i in range(0, len(positions), batch_size):
                w, p, t = windows[i:i + batch_size], positions[i:i + batch_size], targets[i:i + batch_size]
                logits = objective.cloze_logits(model, w.tolist(), p.tolist(), variant)
                logp = F.log_softmax(logits.float(), dim=-1).cpu()
                nll += float(-logp[torch.arange(len(t)), t].sum())
                correct += float((logp.argmax(-1) == t).sum())
                top5 += float((logp.topk(5, dim=-1).indices == t[:, None]).any(-1).sum())
            n = len(positions)
            acc = correct / max(n, 1)
            out[variant] = {"accuracy": acc, "top5": top5 / max(n, 1), "nll": nll / max(n, 1), "n": n,
                            "stderr": math.sqrt(acc * (1 - acc) / max(n, 1))}
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
    out["method"] = objective.cloze_method
    return out
