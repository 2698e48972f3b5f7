"""The interface every objective implements, and the helpers several of them share.

An objective turns packed blocks of token ids into a batch (`collate`, CPU, all randomness from an explicit
torch.Generator so a resumed run draws the same masks) and a batch plus a model into a loss (`loss`). It knows
nothing about the trainer; the trainer knows objectives only through this interface.
"""
import torch
import torch.nn.functional as F

from pretrain.errors import UserError

ARCH_PRESETS = {"encoder": "preset bert", "decoder": "presets gpt2, llama",
                "encoder-decoder": "presets t5, bart, transformer"}
# what to use instead, per architecture, when an objective refuses one
ALTERNATIVES = {"encoder": "use mlm for bert", "decoder": "use clm for gpt2/llama",
                "encoder-decoder": "use span for t5, infill for bart, or clm as a prefix LM"}


class Objective:
    """Base class: subclasses set `name`, `archs`, `special_tokens` and implement `collate` and `loss`.

    `special_tokens` is a class attribute so the tokenizer builder can reserve the tokens before any objective
    (which needs the finished tokenizer) exists: `OBJECTIVES[name].special_tokens`.
    """

    name: str = ""
    archs: tuple = ()
    special_tokens: tuple = ("pad_token", "eos_token")

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.mask_id = tokenizer.mask_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.arch = None  # set by check_arch: lets clm switch to prefix LM on encoder-decoder models
        for role in self.special_tokens:
            if role != "sentinels" and getattr(tokenizer, role + "_id", None) is None:
                raise UserError(f"objective '{self.name}' needs the tokenizer's {role}; add it with "
                                f"pretrain.tokenizer.ensure_special_tokens(tokenizer, {self.special_tokens})")

    # ---- interface -----------------------------------------------------------------------------------------
    def check_arch(self, arch: str):
        """Refuse an architecture this objective cannot train, in one line naming what it can train."""
        if arch not in ARCH_PRESETS:
            raise UserError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCH_PRESETS)}")
        if arch not in self.archs:
            article = "an" if arch[0] in "aeiou" else "a"
            needs = " or ".join(f"{'an' if a[0] in 'aeiou' else 'a'} {a} ({ARCH_PRESETS[a]})" for a in self.archs)
            raise UserError(f"objective '{self.name}' cannot train {article} {arch} model: it needs {needs}; "
                            f"{ALTERNATIVES[arch]}")
        self.arch = arch

    def block_length(self, seq_len: int) -> int:
        """Raw corpus tokens one example consumes for a model of sequence length `seq_len`."""
        return seq_len

    def collate(self, blocks, generator: torch.Generator) -> dict:
        raise NotImplementedError

    def loss(self, model, batch: dict):
        raise NotImplementedError

    def n_tokens(self, batch: dict) -> int:
        """Corpus tokens this batch consumed (for token budgets): batch size x block length, from shapes only
        (no device sync, no private batch keys)."""
        raise NotImplementedError

    # ---- helpers for subclasses ----------------------------------------------------------------------------
    def _non_special_ids(self) -> torch.Tensor:
        """Vocabulary ids that may be drawn as random replacements: everything except special tokens."""
        if not hasattr(self, "_random_pool"):
            keep = torch.ones(self.vocab_size, dtype=torch.bool)
            keep[self.special_ids[self.special_ids < self.vocab_size]] = False
            self._random_pool = keep.nonzero().squeeze(1)
        return self._random_pool

    def _random_tokens(self, shape, generator) -> torch.Tensor:
        pool = self._non_special_ids()
        return pool[torch.randint(len(pool), shape, generator=generator)]


def as_blocks(blocks) -> torch.Tensor:
    """LongTensor [B, L] from a tensor, a list of equal-length lists, or a list of 1-D tensors."""
    if isinstance(blocks, torch.Tensor):
        out = blocks
    elif len(blocks) and isinstance(blocks[0], torch.Tensor):
        out = torch.stack(list(blocks))
    else:
        out = torch.as_tensor(blocks)
    if out.dim() != 2:
        raise ValueError(f"collate expects blocks of shape [batch, block_length], got {tuple(out.shape)}")
    return out.long()


def unwrap(model):
    """The Transformer under DDP (`.module`) wrappers: its `config`, `logits` and `lm_loss` are not forwarded."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def predict(model, hidden: torch.Tensor, labels: torch.Tensor):
    """Cross-entropy of the LM head on `hidden` [..., d] against `labels` [...] (-100 ignored).

    Returns (loss, metrics). Uses the model's fused `lm_loss` (no full logits) when it has one, else `logits`.
    """
    core = unwrap(model)
    valid = labels != -100
    n = valid.sum()
    if hasattr(core, "lm_loss"):
        loss, correct = core.lm_loss(hidden, labels)
    else:
        logits = core.logits(hidden).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        loss = torch.nan_to_num(loss) if n == 0 else loss  # keep the graph when nothing is predicted
        correct = ((logits.argmax(-1) == labels) & valid).sum()
    metrics = {"loss": loss.detach().float(),
               "accuracy": (correct.float() / n.clamp(min=1)).detach(),
               "n_predicted": n.detach().float()}
    return loss, metrics


def decoder_inputs(model, batch: dict) -> torch.Tensor:
    """decoder_input_ids with the first column set to the model's decoder_start_token_id.

    The collate only knows the tokenizer, so it starts decoder inputs with the tokenizer convention (T5: pad,
    BART: eos); the model config is the authority (HF generation reads it), so when it names a start token, that
    token is used. Every row starts with the start token, so the column is replaced whole.
    """
    ids = batch["decoder_input_ids"]
    start = getattr(unwrap(model).config, "decoder_start_token_id", None)
    if start is not None and bool((ids[:, 0] != start).any()):
        ids = ids.clone()
        ids[:, 0] = start
    return ids


def word_starts(ids: torch.Tensor, starts_word: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """Bool, same shape as ids [..., L]: does each position begin a word? From the vocabulary table, at and right
    after every special token (a separator ends the word before it), and at the beginning of the block."""
    starts = starts_word[ids] | special
    starts[..., 1:] |= special[..., :-1]
    starts[..., 0] = True
    return starts


def word_start_table(tokenizer) -> torch.Tensor:
    """Bool table over the vocabulary: does token id v begin a new word?

    Asked of the tokenizer's own decoder rather than of a `##` convention, so it holds for any fast tokenizer:
    decoding [ref, v] puts whitespace between ref and v exactly when v starts a word (WordPiece "##ab" -> no
    space; byte-level "Ġab" -> space; Metaspace "▁ab" -> space; a bare space token "Ġ"/"▁" starts the word that
    follows it). `ref` is an ordinary token that decodes to letters without whitespace. The decoder's cosmetic
    cleanup (WordPiece glues "." and "," to the previous word) is switched off on a copy, so punctuation split
    by the pre-tokenizer stays its own word. Special tokens always start words (and so does the token after
    one: callers OR the shifted special mask in). One batched decode of the vocabulary: milliseconds.
    """
    from tokenizers import Tokenizer  # a private copy, so switching off cleanup never touches the caller's

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    decoder = backend.decoder
    if decoder is not None and hasattr(decoder, "cleanup"):
        decoder.cleanup = False
        backend.decoder = decoder
    size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    ref, ref_text = None, ""
    for v in range(size):
        text = backend.decode([v], skip_special_tokens=False)
        if v not in special and text.isalpha():
            ref, ref_text = v, text
            break
    if ref is None:  # no plain word piece at all: every token is its own word
        return torch.ones(size, dtype=torch.bool)
    pairs = backend.decode_batch([[ref, v] for v in range(size)], skip_special_tokens=False)
    starts = torch.tensor([not p.startswith(ref_text) or p[len(ref_text):len(ref_text) + 1].isspace()
                           for p in pairs], dtype=torch.bool)
    starts[[s for s in special if s < size]] = True
    return starts


def check_fraction(objective: str, option: str, value: float, allow_zero: bool = True, allow_one: bool = False):
    """Options that are probabilities or ratios: refuse a value outside the range in one line."""
    low_ok = value >= 0 if allow_zero else value > 0
    high_ok = value <= 1 if allow_one else value < 1
    if not (low_ok and high_ok):
        interval = f"{'[' if allow_zero else '('}0, 1{']' if allow_one else ')'}"
        raise UserError(f"objective '{objective}': {option}={value} must be in {interval}")
