"""A yardstick computed identically for every model: whole-word cloze accuracy on held-out text.

    windows = held_out_windows(data_cfg, tokenizer, window=64, n=256, seed=0)     # LongTensor [n, window]
    positions = cloze_positions(windows, tokenizer, min_context=16, seed=0)        # LongTensor [n] (-1: none)
    scores = cloze(model, tokenizer, objective_name, windows, positions)
    # {"both": {"accuracy", "top5", "nll", "n", "stderr"}, "left": {...}}

Definition. The held-out text is the validation split of the corpus (documents no run trained on), tokenized with
the comparison's one shared tokenizer and cut into windows of `window` tokens. In each window one position is
drawn (seeded, so the same for every model) among the tokens that are a whole word on their own: alphabetic,
beginning a word, followed by a token that begins a word, with at least `min_context` tokens on the left and
`min_right` on the right. That token is hidden and each model predicts it the way its objective taught it to:

    encoder (MLM, BERT)            the token replaced by the mask token; the logits at that position
    decoder (CLM, GPT)             next-token prediction: the logits after the left context
    encoder-decoder, infill (BART) the token replaced by <mask> in the encoder input (<s> ... </s>); the decoder reads
                                   the original text teacher-forced up to the hole and predicts the next token
    encoder-decoder, span (T5)     the token replaced by <extra_id_0> in the encoder input (... </s>); the decoder
                                   reads [start, <extra_id_0>] and predicts the first target token
    encoder-decoder, clm (prefix)  the left context to the encoder; the decoder predicts the first token

Two variants: "both" gives each model all the context it can natively use (the whole window; GPT and prefix LMs
can only use the left part), "left" truncates the window right after the hidden token for every model, so every
model has exactly the same information. Scores: top-1 accuracy, top-5 accuracy and the mean negative
log-likelihood (nats) of the hidden token; all comparable across models because the tokenizer is shared.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFINITION = """\
**Whole-word cloze** on held-out text (the validation documents no run trained on), tokenized with the one shared
tokenizer and cut into windows of {window} tokens. In each window one position is drawn with a fixed seed (the same
positions and tokens for every model) among tokens that are a whole alphabetic word on their own, with at least
{min_context} tokens to the left and {min_right} to the right. The token is hidden and each model predicts it in its
native way: BERT (MLM) reads the window with `[MASK]`/`<mask>` at that position; GPT (CLM) predicts the next token
from the left context; BART (infilling) reads `<s> ... <mask> ... </s>` and its decoder, teacher-forced with the
original text up to the hole, predicts the next token; T5 (span corruption) reads `... <extra_id_0> ... </s>` and
its decoder predicts the first token after `<extra_id_0>`. Scores: top-1 and top-5 accuracy and the mean negative
log-likelihood of the hidden token (nats; comparable because every model shares the tokenizer and the target).
Variant **both**: each model uses all the context it natively can (GPT only the left). Variant **left**: the window
is cut right after the hidden token for every model, so all see exactly the same text."""

CAVEATS = """\
- In the *both* variant the bidirectional models see the right context and GPT cannot: that is the native
  advantage of the objective, not a flaw of GPT. The *left* variant removes it, but then puts BERT, BART and T5 out
  of their training distribution (a hole at the very end of the text), which favours GPT. Read both.
- MLM is trained on exactly this task (one hidden token); BART's `<mask>` stands for a span of 0..n words and T5's
  sentinel for a span of about 3 tokens, so a one-token hole is a narrower question than they were trained on
  (neither is told that exactly one token is missing).
- BART's decoder is teacher-forced with the original left context, which the encoder also sees: no extra
  information, but a different route to the answer.
- Only whole single-token alphabetic words are hidden (frequent, short words dominate); punctuation and word
  pieces are never asked. The sample is small: the standard error sqrt(p(1-p)/n) is given next to each accuracy.
- Tiny models on a tiny budget: differences of a few points are within noise; the yardstick measures what these
  runs learned, not what the objectives can reach at scale."""


# ---- held-out text --------------------------------------------------------------------------------------------
def held_out_windows(data_cfg, tokenizer, window: int = 64, n: int = 256, seed: int = 0) -> torch.Tensor:
    """[min(n, available), window] token windows from the validation split of data_cfg (seeded choice, in order)."""
    import numpy as np

    from .corpus import load_corpus
    from .errors import UserError
    from .packing import token_stream, validation_texts

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
    from objectives.base import word_start_table

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
    from objectives.base import word_start_table

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
def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def _family(model, objective: str) -> str:
    arch = model.config.arch
    if arch == "encoder":
        return "mask"
    if arch == "decoder":
        return "next"
    return {"infill": "infill", "span": "sentinel"}.get(objective, "prefix")


@torch.no_grad()
def _hidden_at(model, tokenizer, family: str, windows: torch.Tensor, positions: torch.Tensor, variant: str):
    """Hidden states [n, d] at the positions that predict windows[i, positions[i]]."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = windows.tolist()
    pos = positions.tolist()
    keep = [r[: p + 1] if variant == "left" else r for r, p in zip(rows, pos)]
    if family == "next":
        ids, mask = _pad([r[:p] for r, p in zip(rows, pos)], pad)  # right padding: invisible to a causal model
        hidden = model(ids)
        return hidden[torch.arange(len(pos)), torch.tensor(pos) - 1]
    if family == "mask":
        mask_id = tokenizer.mask_token_id
        ids, mask = _pad([r[:p] + [mask_id] + r[p + 1:] for r, p in zip(keep, pos)], pad)
        hidden = model(ids, attention_mask=mask)
        return hidden[torch.arange(len(pos)), torch.tensor(pos)]
    start = model.config.decoder_start_token_id
    if start is None:
        start = pad
    eos = tokenizer.eos_token_id
    if family == "infill":
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        enc = [[bos] + r[:p] + [tokenizer.mask_token_id] + r[p + 1:] + [eos] for r, p in zip(keep, pos)]
        dec = [[start, bos] + r[:p] for r, p in zip(rows, pos)]  # teacher-forced original text up to the hole
        index = [p + 1 for p in pos]
    elif family == "sentinel":
        sentinel = tokenizer.convert_tokens_to_ids("<extra_id_0>")
        enc = [r[:p] + [sentinel] + r[p + 1:] + [eos] for r, p in zip(keep, pos)]
        dec = [[start, sentinel] for _ in pos]
        index = [1 for _ in pos]
    else:  # prefix LM
        enc = [r[:p] for r, p in zip(rows, pos)]
        dec = [[start] for _ in pos]
        index = [0 for _ in pos]
    enc_ids, enc_mask = _pad(enc, pad)
    dec_ids, _ = _pad(dec, pad)  # right padding of a causal decoder: invisible to the positions read
    hidden = model(enc_ids, attention_mask=enc_mask, decoder_input_ids=dec_ids)
    return hidden[torch.arange(len(pos)), torch.tensor(index)]


@torch.no_grad()
def cloze(model, tokenizer, objective: str, windows: torch.Tensor, positions: torch.Tensor,
          batch_size: int = 64, variants=("both", "left")) -> dict:
    """Cloze scores of one model per variant: accuracy, top5, nll (nats), n, stderr (of accuracy)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    valid = positions >= 0
    windows, positions = windows[valid], positions[valid]
    targets = windows[torch.arange(len(positions)), positions]
    family = _family(model, objective)
    out = {}
    try:
        for variant in variants:
            correct = top5 = nll = 0.0
            for i in range(0, len(positions), batch_size):
                w, p, t = windows[i:i + batch_size], positions[i:i + batch_size], targets[i:i + batch_size]
                hidden = _hidden_at(model, tokenizer, family, w.to(device), p, variant)
                logp = F.log_softmax(model.logits(hidden).float(), dim=-1).cpu()
                nll += float(-logp[torch.arange(len(t)), t].sum())
                correct += float((logp.argmax(-1) == t).sum())
                top5 += float((logp.topk(5, dim=-1).indices == t[:, None]).any(-1).sum())
            n = len(positions)
            acc = correct / max(n, 1)
            out[variant] = {"accuracy": acc, "top5": top5 / max(n, 1), "nll": nll / max(n, 1), "n": n,
                            "stderr": math.sqrt(acc * (1 - acc) / max(n, 1))}
    finally:
        model.train(was_training)
    out["method"] = {"mask": "[MASK] at the position", "next": "next-token prediction",
                     "infill": "<mask> infilling, teacher-forced decoder", "sentinel": "<extra_id_0>, first target token",
                     "prefix": "prefix LM, first decoder token"}[family]
    return out
