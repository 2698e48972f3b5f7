"""GPT-BERT hybrid (Charpentier & Samuel 2024, "GPT or BERT: why not both?", arXiv:2410.24159; BabyLM 2024's
winning submission): one decoder trained on a mix of causal language modelling and masked next-token prediction.

Both halves read a block of seq_len + 1 packed tokens as inputs block[:-1] and labels shifted by one, so one head
and one shift serve both (the paper's figure 1):

- causal rows (`causal_share` of the examples): attention causal, labels = inputs shifted by one, as objective clm;
- masked rows (the rest): spans of tokens are selected, replaced by the mask token / a random token / kept, and
  each selected token at input position i is the label of position i - 1 ("masked next-token prediction", MNTP);
  attention is bidirectional, so position i - 1 reads the masked position and both sides of it.

Defaults, from the authors' code (github.com/ltgoslo/gpt-bert at 9fc1507; read, not copied):
- causal_share 1/16: pretraining/train_10m.py:42-43 and train_100m.py:42-43 (`hybrid_numerator` 15 of
  `hybrid_denominator` 16 processes train masked, lines 90-94): a 1:15 causal-to-masked ratio;
- mask_probability 0.15: dataset.py:398 (validation) and the end of the training schedule (train_*.py:58-59,
  `mask_p_start` 0.3 falling linearly to `mask_p_end` 0.15, dataset.py:192); the schedule itself is not
  reproduced, since objectives do not see the training step: set 0.3 to train at its start rate;
- mask_replace 0.8 / random_replace 0.1 (the rest kept): train_*.py:60-61 (`mask_random_p`, `mask_keep_p` 0.1),
  applied per span (dataset.py:39-49);
- max_span 3: spans of uniform length 1..3 (dataset.py:12,17), each span drawing one score; the lowest-scoring
  spans are taken until round(n * mask_probability) tokens are covered, rounded stochastically and at least one
  (dataset.py:193-195); the threshold span is taken whole, so the rate slightly exceeds mask_probability.
- the loss: each of the paper's processes averages its own targets and data parallelism averages the processes,
  so the total weights the causal and the masked mean by their shares of the examples (train_multi_gpu.py:247,
  288-293); here by the rows of the batch: (rows_c * clm_loss + rows_m * mntp_loss) / rows.

Not taken: the paper's per-token mask-count reweighting (dataset.py:31-35, state kept across epochs) and its
`<s>` before every segment. Special tokens are never selected, nor the first input position (no position before
it); with documents on, nor the first token of a document (the position before it, an EOS, belongs to another
document), and each row's attention stays in its documents: block-causal for causal rows, block-diagonal for masked
ones. Metrics: clm_loss and mntp_loss (each with _accuracy, _n_predicted) beside the total; validation also logs
l2r_loss / l2r_perplexity, the model run left to right on every validation block (comparable with clm's loss).
"""
from dataclasses import dataclass

import torch

from models.errors import UserError

from .base import (Objective, as_blocks, check_fraction, check_replacement, cut, model_inputs, pad_rows, register,
                   with_padding)
from .clm import CausalLM
from .ul2 import part_metrics


@dataclass
class HybridOptions:
    causal_share: float = 1 / 16  # share of the examples trained causally (the rest by MNTP); 0 and 1 allowed
    mask_probability: float = 0.15  # share of a masked row's selectable tokens selected
    mask_replace: float = 0.8  # of the selected spans: become the mask token
    random_replace: float = 0.1  # of the selected spans: become random non-special tokens (the rest stay)
    max_span: int = 3  # spans of uniform length 1..max_span (1: single tokens)

    def check(self):
        check_fraction("hybrid", "causal_share", self.causal_share, allow_one=True)
        check_fraction("hybrid", "mask_probability", self.mask_probability, allow_zero=False)
        check_replacement("hybrid", self.mask_replace, self.random_replace)
        if self.max_span < 1:
            raise UserError(f"objective 'hybrid': max_span={self.max_span} must be at least 1")


@register
class Hybrid(Objective):
    name = "hybrid"
    title = "GPT-BERT hybrid: causal LM + masked next-token prediction"
    hub_tag = "gpt-bert"
    archs = ("decoder",)
    special_tokens = ("pad_token", "eos_token", "mask_token")
    loss_meaning = ("cross-entropy of the causal rows' next tokens and of the masked rows' hidden tokens, each "
                    "predicted from the position before it (l2r_loss: the same model left to right)")
    cloze_note = "trains on this question in its masked rows: a hidden token predicted from the position before it"
    Options = HybridOptions
    document_aware = True

    def __init__(self, tokenizer, model_cfg, options=None, documents: bool = False):
        super().__init__(tokenizer, model_cfg, options, documents)
        self.left_to_right = CausalLM(tokenizer, model_cfg, documents=documents)

    def block_length(self, seq_len):
        return seq_len + 1

    # ---- batch ---------------------------------------------------------------------------------------------
    def collate(self, blocks, generator):
        block = as_blocks(blocks)
        if block.shape[1] < 2:
            raise ValueError("hybrid needs blocks of at least 2 tokens (block_length(seq_len) = seq_len + 1)")
        causal_batch = self.left_to_right.collate(block, generator)  # inputs, shifted labels, segment ids
        ids, clm_labels = causal_batch["input_ids"], causal_batch["labels"]
        real = self.real_tokens(block)[:, :-1]
        causal = self.causal_rows(len(block), generator)
        selected = self.select(ids, real, generator)
        inputs = torch.where(causal[:, None], ids, self.corrupt(ids, selected[0], selected[1], generator))
        mntp_labels = torch.full_like(ids, -100)
        mntp_labels[:, :-1] = ids[:, 1:].masked_fill(~selected[0][:, 1:], -100)
        batch = {"input_ids": inputs, "labels": torch.where(causal[:, None], clm_labels, mntp_labels)}
        if not bool(causal.all()):  # an all-causal batch keeps the decoder's no-mask fast path
            batch["causal"] = causal
        if "segment_ids" in causal_batch:
            batch["segment_ids"] = causal_batch["segment_ids"]
        return with_padding(batch, "attention_mask", real)  # masked rows read both sides: padding must be hidden

    def causal_rows(self, batch: int, generator) -> torch.Tensor:
        """Bool[batch]: which rows train causally; floor(batch * causal_share + U) of them, U uniform (stochastic
        rounding: a batch of 16 at 1/16 has exactly one, a batch of 8 one every other batch), at random places."""
        draw = torch.rand(1, generator=generator).item()
        n_causal = int(batch * self.options.causal_share + draw)
        causal = torch.zeros(batch, dtype=torch.bool)
        causal[torch.randperm(batch, generator=generator)[:n_causal]] = True
        return causal

    def selectable(self, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Bool [B, L]: input positions that may be hidden: real, not special, not the first position (nothing
        before it predicts it) and, with documents, not the first token of a document."""
        ok = real & ~torch.isin(ids, self.special_ids)
        ok[:, 0] = False
        if self.documents:
            ok[:, 1:] &= ids[:, :-1] != self.eos_id
        return ok

    def select(self, ids, real, generator):
        """(Bool [B, L] selected positions, Long [B, L] span index of each position): spans of uniform length
        1..max_span tile each row, each span draws one uniform score, and the spans of the k lowest-scoring
        selectable positions are taken whole, k = max(1, floor(n * mask_probability + U)) of n selectable."""
        o = self.options
        batch, length = ids.shape
        lengths = torch.randint(1, o.max_span + 1, (batch, length), generator=generator)
        starts = lengths.cumsum(dim=1) - lengths  # the first span starts at 0; later ones may start past the end
        is_start = torch.zeros(batch, length + 1, dtype=torch.long)
        is_start.scatter_(1, starts.clamp(max=length), 1)
        span = is_start[:, :length].cumsum(dim=1) - 1
        score = torch.rand(batch, length, generator=generator).gather(1, span)
        ok = self.selectable(ids, real)
        score = score.masked_fill(~ok, float("inf"))
        n = ok.sum(dim=1)
        k = (n * o.mask_probability + torch.rand(batch, generator=generator)).floor().long().clamp(min=1)
        k = torch.minimum(k, n)
        threshold = score.sort(dim=1).values.gather(1, (k - 1).clamp(min=0)[:, None])
        return ok & (score <= threshold) & (k > 0)[:, None], span

    def corrupt(self, ids, selected, span, generator):
        """ids with each selected span replaced as a whole: the mask token (mask_replace), random non-special
        tokens (random_replace) or kept."""
        o = self.options
        how = torch.rand(ids.shape, generator=generator).gather(1, span)
        to_mask = selected & (how < o.mask_replace)
        to_random = selected & (how >= o.mask_replace) & (how < o.mask_replace + o.random_replace)
        out = ids.masked_fill(to_mask, self.mask_id)
        return torch.where(to_random, self._random_tokens(ids.shape, generator), out)

    # ---- loss ----------------------------------------------------------------------------------------------
    def loss(self, model, batch):
        hidden = model(**model_inputs(batch, "input_ids", "attention_mask", "segment_ids", "causal"))
        labels = batch["labels"]
        rows = labels.shape[0]
        causal = batch.get("causal")
        causal = torch.ones(rows, dtype=torch.bool, device=labels.device) if causal is None else causal
        predicted = labels != -100
        metrics, parts = {}, []
        for name, in_part in (("clm", causal), ("mntp", ~causal)):
            where = predicted & in_part[:, None]
            loss, right = model.lm_loss(hidden[where], labels[where])  # a part with no targets: loss 0
            n = where.sum()
            metrics.update(part_metrics(name, loss, right, n))
            parts.append((loss * in_part.sum(), right, n))
        total = (parts[0][0] + parts[1][0]) / rows  # each part's mean weighted by its share of the rows
        metrics.update(part_metrics("", total, parts[0][1] + parts[1][1], parts[0][2] + parts[1][2]))
        return total, metrics

    def validation_variants(self) -> dict:
        return {"l2r": self.left_to_right}

    # ---- the cloze yardstick: as in its masked rows -----------------------------------------------------------
    @property
    def cloze_method(self) -> str:
        return "`<mask>` at the position, read from the position before (masked next-token prediction)"

    def cloze_batch(self, windows, positions, variant):
        """The window with the hidden token replaced by the mask token, read bidirectionally; the position before
        it predicts it ("left": the window cut right after the mask)."""
        rows = [r[:p] + [self.mask_id] + r[p + 1:] for r, p in zip(cut(windows, positions, variant), positions)]
        ids, mask = pad_rows(rows, self.pad_id)
        return ({"input_ids": ids, "attention_mask": mask, "causal": torch.zeros(len(rows), dtype=torch.bool)},
                torch.tensor(positions) - 1)

