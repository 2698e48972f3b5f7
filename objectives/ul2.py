"""UL2's mixture of denoisers (Tay et al., 2022, "UL2: Unifying Language Learning Paradigms").

Seven denoisers (the paper's section 3.1.2), each example drawing one from the collate's generator:

- R, regular span corruption, paradigm token [NLU]: mean span 3 and 8, 15% of the tokens corrupted;
- X, extreme span corruption, [NLG]: (mean span 3, 50%), (8, 50%), (64, 15%), (64, 50%);
- S, sequential denoising (prefix LM), [S2S].

Mixing: the S-denoiser on `s_rate` of the examples (20%, the share the paper's ablation of S-denoising rates,
section 4.5, settles on), the six span denoisers uniformly on the rest (13.3% each); the paper samples its
denoisers uniformly apart from that.

The paradigm token is the first encoder token of every example. The span denoisers are T5's span corruption
(objectives/span.py: `corrupt`, sentinels <extra_id_0> first, inputs and targets ending in EOS) at their own
(mean span, rate); the S-denoiser is the toolkit's encoder-decoder prefix LM (objectives/clm.py: a uniform split,
prefix to the encoder, the continuation to the decoder, no EOS added) on the first `encoder width` tokens of the
block. One block length serves all seven: the largest whose every denoiser's input (paradigm token, sentinels,
EOS) fits seq_len and whose every target fits seq_len, also for a shorter row (the corpus's padded last block).
The encoder is as wide as the longest input that block length can give and the decoder as wide as the longest
target, so rows are right-padded (an attention_mask; targets -100): an R example fills the encoder, X examples use
about two thirds of it, an S example leaves the block's last ~10% unread.

The loss logs, beside the overall loss, each paradigm's `r_loss`, `x_loss`, `s_loss` and each denoiser's
(`r3_15_loss` ... `x64_50_loss`; S is `s_loss`), with `_accuracy` and `_n_predicted`: the mean over the target
tokens of those examples, weighted by their count across micro-batches, processes and validation batches
(objectives.base.metric_weight).
"""
from dataclasses import dataclass

import torch

from models.errors import UserError

from .base import Objective, as_blocks, check_fraction, model_inputs, register, with_padding
from .clm import CausalLM
from .span import SpanCorruption, corrupt, corrupted_lengths, span_counts

PARADIGMS = {"r": "[NLU]", "x": "[NLG]", "s": "[S2S]"}  # the paradigm (mode) token of each kind of denoiser
SPAN_DENOISERS = (("r", 3.0, 0.15), ("r", 8.0, 0.15),
                  ("x", 3.0, 0.5), ("x", 8.0, 0.5), ("x", 64.0, 0.15), ("x", 64.0, 0.5))  # (paradigm, mu, r)
# metric names of the seven, in the order of `rates`: r3_15_loss is R with mean span 3 at 15% (s: the S-denoiser)
DENOISER_NAMES = tuple(f"{kind}{mu:g}_{round(rate * 100)}" for kind, mu, rate in SPAN_DENOISERS) + ("s",)


@dataclass
class UL2Options:
    s_rate: float = 0.2  # share of examples for the S-denoiser; the six span denoisers share the rest equally

    def check(self):
        check_fraction("ul2", "s_rate", self.s_rate, allow_one=True)


@register
class MixtureOfDenoisers(Objective):
    name = "ul2"
    title = "mixture of denoisers (UL2)"
    hub_tag = "mixture-of-denoisers"
    archs = ("encoder-decoder",)
    special_tokens = ("pad_token", "eos_token", "sentinels", *PARADIGMS.values())
    loss_meaning = ("cross-entropy on the targets of seven denoisers: dropped spans behind their sentinels (R: 15% "
                    "in short spans, X: 50% or long spans) and prefix-LM continuations (S, 20%)")
    cloze_overhead = 2  # [NLU] ... </s>
    cloze_method = "`[NLU]` + `<extra_id_0>`, first target token"
    cloze_note = ("asked as its R-denoiser: `[NLU]` then the window with the word replaced by `<extra_id_0>`; "
                  "the sentinel stands for a span of 3 or 8 tokens there, so one hidden token is a narrower question")
    Options = UL2Options

    def __init__(self, tokenizer, model_cfg, options=None, documents: bool = False):
        super().__init__(tokenizer, model_cfg, options, documents)
        self.span = SpanCorruption(tokenizer, model_cfg)  # its sentinels and its cloze
        self.prefix_lm = CausalLM(tokenizer, model_cfg)
        self.paradigm_ids = dict(zip(PARADIGMS, tokenizer.convert_tokens_to_ids(list(PARADIGMS.values()))))
        spans = (1 - self.options.s_rate) / len(SPAN_DENOISERS)
        self.rates = torch.tensor([spans] * len(SPAN_DENOISERS) + [self.options.s_rate], dtype=torch.float64)
        self._widths: dict = {}

    # ---- lengths ---------------------------------------------------------------------------------------------
    @staticmethod
    def _longest(n: int) -> tuple:
        """(encoder, decoder) tokens of the longest span-denoiser input (with its paradigm token) and target of a
        row of n real tokens."""
        if n < 2:  # nothing to drop: [paradigm] text </s>, target </s>
            return n + 2, 1
        lengths = [corrupted_lengths(n, r, mu) for _, mu, r in SPAN_DENOISERS]
        return max(i for i, _ in lengths) + 1, max(t for _, t in lengths)

    def widths(self, length: int) -> tuple:
        """(encoder, decoder) widths of the batch of blocks of `length` tokens: the longest input and target any
        row of at most `length` real tokens can give (the S-denoiser reads encoder-width tokens: its prefix plus
        [S2S] fills at most the encoder, its continuation at most encoder - 1 decoder positions)."""
        if length not in self._widths:
            enc = dec = 1
            for n in range(1, length + 1):
                e, d = self._longest(n)
                enc, dec = max(enc, e), max(dec, d)
            self._widths[length] = (enc, max(dec, enc - 1))
        return self._widths[length]

    def block_length(self, seq_len):
        if seq_len < 4:
            raise UserError(f"objective 'ul2' needs run.seq_len of at least 4, got {seq_len}")
        n, enc, dec = 1, 3, 1
        while True:  # the widths only grow with the length: stop before the first that does not fit
            e, d = self._longest(n + 1)
            if max(enc, e) > seq_len or max(dec, d) > seq_len:
                break
            n, enc, dec = n + 1, max(enc, e), max(dec, d)
        self._check_sentinels(n)
        return n

    def _check_sentinels(self, length: int):
        spans = max(span_counts(length, r, mu)[1] for _, mu, r in SPAN_DENOISERS) if length >= 2 else 0
        if spans > len(self.span.sentinel_ids):
            raise UserError(f"objective 'ul2': {length} raw tokens make up to {spans} noise spans but the tokenizer "
                            f"has {len(self.span.sentinel_ids)} sentinels; use a shorter seq_len or more <extra_id_N>")

    # ---- batches ---------------------------------------------------------------------------------------------
    def collate(self, blocks, generator):
        ids = as_blocks(blocks)
        batch, length = ids.shape
        self._check_sentinels(length)
        enc_width, dec_width = self.widths(length)
        n_real = self.real_tokens(ids).sum(dim=1)
        choice = torch.multinomial(self.rates, batch, replacement=True, generator=generator)
        paradigm = torch.tensor([list(PARADIGMS).index(d[0]) for d in SPAN_DENOISERS] + [2])[choice]
        order = torch.argsort(choice, stable=True)  # rows grouped by denoiser (so by paradigm): the loss slices them
        ids, n_real, choice, paradigm = ids[order], n_real[order], choice[order], paradigm[order]
        inputs = torch.full((batch, enc_width), self.pad_id)
        mask = torch.zeros((batch, enc_width), dtype=torch.long)
        labels = torch.full((batch, dec_width), -100)
        previous = torch.full((batch, dec_width), self.pad_id)
        for k, (kind, mu, rate) in enumerate(SPAN_DENOISERS):
            rows = (choice == k).nonzero().squeeze(1).tolist()
            for r, (source, target) in zip(rows, self._corrupt_rows(ids, n_real, rows, mu, rate, generator)):
                source = torch.cat([torch.tensor([self.paradigm_ids[kind]]), source])
                inputs[r, :len(source)], mask[r, :len(source)] = source, 1
                labels[r, :len(target)], previous[r, 0], previous[r, 1:len(target)] = \
                    target, self.decoder_start_id, target[:-1]
        rows = (choice == len(SPAN_DENOISERS)).nonzero().squeeze(1)
        if len(rows):
            self._prefix_rows(ids[rows, :enc_width], rows, generator, inputs, mask, labels, previous)
        out = {"input_ids": inputs, "decoder_input_ids": previous, "labels": labels, "paradigm": paradigm,
               "denoiser": choice}
        return with_padding(out, "attention_mask", mask.bool())

    def _corrupt_rows(self, ids, n_real, rows, mu, rate, generator):
        """(input, target) of each of `rows` under one span denoiser: full rows corrupted together, a padded row
        over its real tokens (one real token: nothing to drop)."""
        length = ids.shape[1]
        full = [r for r in rows if n_real[r] == length]
        pairs = {}
        if full:
            sources, targets = corrupt(ids[full], rate, mu, self.span.sentinel_ids, self.eos_id, generator)
            pairs.update({r: (s, t) for r, s, t in zip(full, sources, targets)})
        eos = torch.tensor([self.eos_id])
        for r in rows:
            n = int(n_real[r])
            if r in pairs:
                continue
            if n >= 2:
                sources, targets = corrupt(ids[r:r + 1, :n], rate, mu, self.span.sentinel_ids, self.eos_id, generator)
                pairs[r] = (sources[0], targets[0])
            else:
                pairs[r] = (torch.cat([ids[r, :n], eos]), eos)
        return [pairs[r] for r in rows]

    def _prefix_rows(self, blocks, rows, generator, inputs, mask, labels, previous):
        """The S-denoiser's rows: the prefix LM's batch of their first encoder-width tokens, [S2S] in front."""
        out = self.prefix_lm.collate(blocks, generator)
        width = out["input_ids"].shape[1]
        prefix_mask = out.get("attention_mask", torch.ones_like(out["input_ids"]))
        inputs[rows, 0], mask[rows, 0] = self.paradigm_ids["s"], 1
        inputs[rows, 1:width + 1], mask[rows, 1:width + 1] = out["input_ids"], prefix_mask
        labels[rows, :width], previous[rows, :width] = out["labels"], out["decoder_input_ids"]

    # ---- loss ------------------------------------------------------------------------------------------------
    def loss(self, model, batch):
        hidden = model(**model_inputs(batch, "input_ids", "attention_mask", "decoder_input_ids"))
        labels = batch["labels"]
        counts = torch.bincount(batch["denoiser"], minlength=len(DENOISER_NAMES)).tolist()  # one sync per batch
        kinds = [kind for kind, _, _ in SPAN_DENOISERS] + ["s"]
        sums = {kind: [0.0, 0, 0] for kind in PARADIGMS}  # paradigm -> [loss x n, correct, n]
        metrics, start = {}, 0
        for name, kind, rows in zip(DENOISER_NAMES, kinds, counts):
            part = labels[start:start + rows]
            n = (part != -100).sum()
            if rows:
                loss, right = model.lm_loss(hidden[start:start + rows], part)
            else:
                loss, right = hidden.new_zeros(()), n
            start += rows
            metrics.update(part_metrics(name, loss, right, n))
            group = sums[kind]
            group[0], group[1], group[2] = group[0] + loss * n, group[1] + right, group[2] + n
        for kind, (loss_sum, right, n) in sums.items():
            metrics.update(part_metrics(kind, loss_sum / n.clamp(min=1), right, n))
        total, correct, n_all = (sum(g[i] for g in sums.values()) for i in range(3))
        loss = total / n_all.clamp(min=1)
        metrics.update(part_metrics("", loss, correct, n_all))
        return loss, metrics

    # ---- the cloze yardstick ---------------------------------------------------------------------------------
    def cloze_batch(self, windows, positions, variant):
        """Asked as the R-denoiser: [NLU], the window with the word replaced by <extra_id_0>, </s>; the decoder
        reads [start, <extra_id_0>] and predicts the first target token."""
        rows = self.span.cloze_rows(windows, positions, variant)
        return self.span.sentinel_cloze([[self.paradigm_ids["r"]] + r for r in rows])

    def score_method(self, variant="word"):
        return "`[NLU]` + " + self.span.score_method(variant)

    def score_rows(self, ids, starts, variant="word"):
        """Scored as its R-denoiser, as the cloze asks: [NLU] before span corruption's rows."""
        return self.span.score_rows(ids, starts, variant, prefix=[self.paradigm_ids["r"]])


def part_metrics(name: str, loss, right, n) -> dict:
    """name_loss / name_accuracy / name_n_predicted of a part of the examples (the whole batch: name "")."""
    prefix = f"{name}_" if name else ""
    return {f"{prefix}loss": loss.detach().float(), f"{prefix}accuracy": (right.float() / n.clamp(min=1)).detach(),
            f"{prefix}n_predicted": n.detach().float()}
