"""Replaced token detection (ELECTRA; Clark et al., 2020, "ELECTRA: Pre-training Text Encoders as Discriminators
Rather Than Generators").

A small generator (objectives/electra_generator.py, the objective's own parameters) learns masked language
modelling; its samples replace the masked tokens, and the model being pretrained, the discriminator (preset
electra: BERT's encoder with a one-logit head), classifies every token as original or replaced.

- Masking is MLM's (objectives/mlm.py) with google-research/electra's settings: each non-special token selected
  with p = 0.15 (the original draws round(0.15 * length) positions; here each token on its own, the same rate),
  85% of the selected become `[MASK]`, the other 15% stay (no random tokens).
- Each selected position is replaced by a token sampled from the generator's softmax (temperature 1), by inverse
  CDF from a uniform the collate draws, so resume and evaluation see the same samples; no gradient flows through
  the sampling. A sampled token equal to the original counts as original.
- loss = generator MLM cross-entropy (mean over the selected) + disc_weight (50) x the discriminator's binary
  cross-entropy (mean over every real token, special tokens included, as the original's input mask).

Metrics: accuracy / n_predicted are the discriminator's over every real token; besides them gen_loss and
gen_accuracy (argmax) over the gen_n_predicted selected tokens, disc_loss, replaced_fraction (discriminator
positives per real token) and masked_fraction over the real tokens, and disc_auc over the disc_pairs (replaced,
original) pairs of the batch (0.5 when a batch has only one class: then it holds no pair and weighs nothing). Each
is averaged over batches weighted by its count (metric_counts; pretrain/train/aggregate.py), so a step's or a
validation's disc_auc is the share of all the pairs its batches hold that the discriminator ranks right.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.errors import UserError

from .base import check_fraction, model_inputs, register
from .electra_generator import Generator, generator_config, to_transformers
from .mlm import MaskedLM, MaskedLMOptions


@dataclass
class Step:
    """One forward of generator and discriminator (ReplacedTokenDetection.forward)."""
    gen_logits: torch.Tensor  # [n_selected, V]
    targets: torch.Tensor  # [n_selected]: the original tokens
    gen_loss: torch.Tensor
    selected: torch.Tensor  # Bool [B, L]: masked for the generator
    original: torch.Tensor  # [B, L]
    corrupted: torch.Tensor  # [B, L]: what the discriminator reads
    replaced: torch.Tensor  # Bool [B, L]: its labels (corrupted != original)
    real: torch.Tensor  # Bool [B, L]: not padding
    disc_logits: torch.Tensor  # [B, L]
    disc_loss: torch.Tensor


@dataclass
class ElectraOptions(MaskedLMOptions):
    mask_replace: float = 0.85  # of the selected: become [MASK] (the rest stay); google-research/electra
    random_replace: float = 0.0
    generator_size: float = 0.25  # generator width / d_model
    generator_layers: float = 1.0  # generator depth / n_layers
    disc_weight: float = 50.0  # lambda: loss = generator loss + disc_weight * discriminator loss

    def check(self, objective: str = "electra"):
        super().check(objective)
        check_fraction(objective, "generator_size", self.generator_size, allow_zero=False, allow_one=True)
        check_fraction(objective, "generator_layers", self.generator_layers, allow_zero=False, allow_one=True)
        if not self.disc_weight > 0:
            raise UserError(f"objective '{objective}': disc_weight={self.disc_weight} must be positive")


@register
class ReplacedTokenDetection(MaskedLM):
    name = "electra"
    title = "replaced token detection (ELECTRA)"
    hub_tag = "replaced-token-detection"
    head_outputs = 1
    loss_meaning = ("generator MLM cross-entropy on the masked tokens (15%) + 50 x the discriminator's binary "
                    "cross-entropy (original or replaced) over every token")
    cloze_method = "`[MASK]` at the position, answered by the generator"
    cloze_note = ("the discriminator cannot answer a cloze: ELECTRA's small generator (the objective's own MLM, "
                  "1/4 of the width by default) answers it, so the cloze scores the generator, not the model being "
                  "pretrained; judge the discriminator by the downstream task")
    metric_names = ("gen_loss", "gen_accuracy", "disc_loss", "disc_auc", "replaced_fraction", "masked_fraction")
    metric_counts = {"disc_loss": "n_predicted", "replaced_fraction": "n_predicted", "masked_fraction": "n_predicted",
                     "disc_auc": "disc_pairs"}  # gen_loss / gen_accuracy: over gen_n_predicted, by their names
    Options = ElectraOptions

    def __init__(self, tokenizer, model_cfg, options=None, documents=False):
        super().__init__(tokenizer, model_cfg, options, documents)
        o = self.options
        self.module = Generator(model_cfg, generator_config(model_cfg, o.generator_size, o.generator_layers))

    def collate(self, blocks, generator):
        batch = super().collate(blocks, generator)
        batch["sample_u"] = torch.rand(batch["input_ids"].shape, generator=generator)  # the generator's draws
        return batch

    def loss(self, model, batch):
        step = self.forward(model, batch)
        loss = step.gen_loss + self.options.disc_weight * step.disc_loss
        scores, truth, targets = step.disc_logits[step.real], step.replaced[step.real], step.targets
        metrics = {"loss": loss.detach(), "accuracy": ((scores > 0) == truth).float().mean().detach(),
                   "n_predicted": step.real.sum().float().detach(), "gen_loss": step.gen_loss.detach(),
                   "gen_n_predicted": step.selected.sum().float().detach(),
                   "disc_loss": step.disc_loss.detach(),
                   "gen_accuracy": (step.gen_logits.argmax(-1) == targets).float().sum().detach()
                   / max(len(targets), 1),
                   "disc_auc": auc(scores.detach(), truth), "disc_pairs": pairs(truth),
                   "replaced_fraction": truth.float().mean().detach(),
                   "masked_fraction": step.selected[step.real].float().mean().detach()}
        return loss, metrics

    def forward(self, model, batch) -> "Step":
        """The generator on the masked input, its samples in place of the selected tokens, the discriminator on
        the result, and both losses (unweighted)."""
        gen = self.own_module(model)
        ids, labels = batch["input_ids"], batch["labels"]
        extra = model_inputs(batch, "attention_mask", "token_type_ids", "segment_ids")
        selected = labels != -100
        targets = labels[selected]
        gen_logits = gen(model, ids, select=selected, **extra).float()
        gen_loss = F.cross_entropy(gen_logits, targets, reduction="sum") / selected.sum().clamp(min=1)
        original = torch.where(selected, labels, ids)
        corrupted = original.clone()
        corrupted[selected] = sample(gen_logits.detach(), batch["sample_u"][selected])
        replaced = corrupted != original
        disc_logits = model.logits(model(corrupted, **extra)).squeeze(-1).float()
        real = extra["attention_mask"].bool() if "attention_mask" in extra else torch.ones_like(replaced)
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits[real], replaced[real].float())
        return Step(gen_logits, targets, gen_loss, selected, original, corrupted, replaced, real, disc_logits,
                    disc_loss)

    @torch.no_grad()
    def cloze_logits(self, model, windows, positions, variant):
        """The generator answers: `[MASK]` at the position, read through the shared embeddings."""
        batch, index = self.cloze_batch(windows, positions, variant)
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items() if v is not None}
        select = torch.zeros(batch["input_ids"].shape, dtype=torch.bool, device=device)
        select[torch.arange(len(positions), device=device), index.to(device)] = True
        return self.module(model, batch["input_ids"], batch.get("attention_mask"), select=select)

    def score_method(self, variant="word"):
        return super().score_method(variant) + ", answered by the generator (the discriminator cannot score text)"

    @torch.no_grad()
    def score_logits(self, model, batch, rows, positions):
        """The generator answers the pseudo-log-likelihood, through the shared embeddings."""
        select = torch.zeros(batch["input_ids"].shape, dtype=torch.bool, device=batch["input_ids"].device)
        select[rows, positions] = True  # the generator returns selected positions in row-major order
        order = torch.argsort(rows * batch["input_ids"].shape[1] + positions)
        logits = self.module(model, batch["input_ids"], batch.get("attention_mask"), select=select)
        out = torch.empty_like(logits)
        out[order] = logits
        return out

    def head_predictions(self, batch: dict) -> int:
        """The discriminator's head reads every real token, not only the masked ones."""
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else batch["input_ids"].numel()

    def own_flops(self, batch: dict) -> float:
        """The generator: its layers and projection on every token, its head on the expected selected share."""
        ids = batch["input_ids"]
        return self.module.train_flops(ids.numel(), ids.shape[1], ids.numel() * self.options.mlm_probability)

    def exports(self, model) -> dict:
        return {"generator": to_transformers(model, self.module)}


def sample(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row of logits [n, V] from its softmax, by inverse CDF of uniform [n] in [0, 1)."""
    cdf = logits.softmax(-1).cumsum(-1)
    picked = torch.searchsorted(cdf, (uniform * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return picked.clamp(max=logits.shape[-1] - 1)


def pairs(truth: torch.Tensor) -> torch.Tensor:
    """The number of (positive, negative) pairs the AUC of `truth` ranks: what it is a mean over."""
    n_pos = truth.sum().double()
    return (n_pos * (truth.numel() - n_pos)).float()


def auc(scores: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of scores for truth: the Mann-Whitney U from mid-ranks (a tie counts half, which
    matters for bf16 logits), in exact integers; 0.5 with a single class. No host synchronization."""
    n_pos = truth.sum()
    n_neg = truth.numel() - n_pos
    ordered = scores.sort().values
    below = torch.searchsorted(ordered, scores)  # scores strictly below each one
    below_or_tied = torch.searchsorted(ordered, scores, right=True)
    twice_u = ((below + below_or_tied + 1) * truth).sum() - n_pos * (n_pos + 1)  # 2 x (sum of mid-ranks - min)
    both = (n_pos > 0) & (n_neg > 0)
    return torch.where(both, twice_u.double() / (2 * n_pos * n_neg).clamp(min=1).double(), 0.5).float()
