"""A new objective in one file, registered when imported: random-token denoising for encoders, with a prediction
head of its own (parameters the trainer optimizes, checkpoints and resumes with the model). Nothing else in the
toolkit knows it: the trainer, `pretrain eval`, the model card and the comparison's yardstick all ask it."""
from dataclasses import dataclass

import torch

from models.errors import UserError
from objectives.base import Objective, as_blocks, check_fraction, predict, register


@dataclass
class DenoiseOptions:
    rate: float = 0.2  # share of tokens replaced by random ones

    def check(self):
        check_fraction("toy-denoise", "rate", self.rate, allow_zero=False)


@register
class RandomTokenDenoising(Objective):
    name = "toy-denoise"
    title = "random-token denoising (a toy)"
    hub_tag = "toy-denoising"
    archs = ("encoder",)
    special_tokens = ("pad_token", "eos_token")
    loss_meaning = "cross-entropy of restoring the tokens that were replaced by random ones"
    cloze_method = "word replaced by `<pad>`, read through the toy head"
    cloze_note = "trains on random replacements, never on `<pad>` holes"
    Options = DenoiseOptions

    def __init__(self, tokenizer, model_cfg, options=None):
        super().__init__(tokenizer, model_cfg, options)
        if model_cfg.d_model < 2:
            raise UserError("objective 'toy-denoise' needs d_model >= 2")
        self.module = torch.nn.Linear(model_cfg.d_model, model_cfg.d_model)  # its own head, before the LM head

    def collate(self, blocks, generator):
        ids = as_blocks(blocks)
        special = torch.isin(ids, self.special_ids)
        selected = (torch.rand(ids.shape, generator=generator) < self.options.rate) & ~special
        inputs = torch.where(selected, self._random_tokens(ids.shape, generator), ids)
        return {"input_ids": inputs, "labels": ids.masked_fill(~selected, -100)}

    def loss(self, model, batch):
        hidden = model(batch["input_ids"])
        selected = batch["labels"] != -100
        return predict(model, self.own_module(model)(hidden[selected]), batch["labels"][selected])

    def cloze_batch(self, windows, positions, variant):
        rows = [r[:p] + [self.pad_id] + r[p + 1:] for r, p in zip(windows, positions)]
        return {"input_ids": torch.tensor(rows)}, torch.tensor(positions)

    @torch.no_grad()
    def cloze_logits(self, model, windows, positions, variant):
        batch, index = self.cloze_batch(windows, positions, variant)
        hidden = model(batch["input_ids"])
        return model.logits(self.module(hidden[torch.arange(len(positions)), index]))
