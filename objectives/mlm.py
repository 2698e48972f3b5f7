"""Masked language modelling (BERT): predict selected tokens from both sides.

Each non-special token is selected with `mlm_probability` (or each word, with `whole_word`); of the selected,
`mask_replace` become the mask token, `random_replace` a random non-special token, the rest stay unchanged (BERT
does this so the model cannot tell which positions it is asked about, and keeps a representation for every
token). Labels are the original ids on selected positions, -100 elsewhere. Packed blocks have no padding, so the
batch has no attention_mask; only the corpus's last block with data.tail pad has one (padding is never selected).
With documents on, segment_ids keep each token's attention inside its document (block-diagonal).

The loss is computed on the selected positions only ("sparse prediction"): their hidden states are gathered
before the LM head, so the [tokens, vocab] projection costs ~15% of the dense one.
"""
from dataclasses import dataclass

import torch

from .base import (Objective, as_blocks, check_fraction, check_replacement, model_inputs, predict, register,
                   with_padding)
from .words import word_start_table, word_starts


@dataclass
class MaskedLMOptions:
    mlm_probability: float = 0.15  # share of non-special tokens (or words) selected
    mask_replace: float = 0.8  # of the selected: become the mask token
    random_replace: float = 0.1  # of the selected: become a random non-special token (the rest stay)
    whole_word: bool = False  # select whole words (every piece of a word or none)

    def check(self, objective: str = "mlm"):
        check_fraction(objective, "mlm_probability", self.mlm_probability, allow_zero=False)
        check_replacement(objective, self.mask_replace, self.random_replace)


@register
class MaskedLM(Objective):
    name = "mlm"
    title = "masked language modeling (BERT)"
    hub_tag = "masked-lm"
    archs = ("encoder",)
    special_tokens = ("pad_token", "eos_token", "mask_token")
    loss_meaning = "cross-entropy on the selected tokens (15% by default), each predicted from both sides"
    cloze_note = "trains on exactly this question: a hidden token predicted from both sides"
    Options = MaskedLMOptions
    document_aware = True

    def __init__(self, tokenizer, model_cfg, options=None, documents=False):
        super().__init__(tokenizer, model_cfg, options, documents)
        self.starts_word = word_start_table(tokenizer) if self.options.whole_word else None

    def collate(self, blocks, generator):
        o = self.options
        ids = as_blocks(blocks)
        special = torch.isin(ids, self.special_ids)
        draw = torch.rand(ids.shape, generator=generator)
        if o.whole_word:  # every token of a word takes the draw of the word's first token
            draw = draw.gather(1, word_start_index(ids, self.starts_word, special))
        selected = (draw < o.mlm_probability) & ~special

        how = torch.rand(ids.shape, generator=generator)
        to_mask = selected & (how < o.mask_replace)
        to_random = selected & (how >= o.mask_replace) & (how < o.mask_replace + o.random_replace)
        inputs = ids.masked_fill(to_mask, self.mask_id)
        inputs = torch.where(to_random, self._random_tokens(ids.shape, generator), inputs)
        batch = {"input_ids": inputs, "labels": ids.masked_fill(~selected, -100)}
        if self.documents:
            batch["segment_ids"] = self.document_ids(ids)
        return with_padding(batch, "attention_mask", self.real_tokens(ids))

    def loss(self, model, batch):
        hidden = model(**model_inputs(batch, "input_ids", "attention_mask", "token_type_ids", "segment_ids"))
        labels = batch["labels"]
        selected = labels != -100
        return predict(model, hidden[selected], labels[selected])


def word_start_index(ids: torch.Tensor, starts_word: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """For each position, the index of the first token of its word (same shape as ids)."""
    starts = word_starts(ids, starts_word, special)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    return torch.where(starts, positions, 0).cummax(dim=1).values
