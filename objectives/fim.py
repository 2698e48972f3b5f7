"""Fill-in-the-middle (Bavarian et al., 2022, "Efficient Training of Language Models to Fill in the Middle").

A decoder trained left to right on documents of which a share is reordered so that the middle comes last: each
document of a packed block (the pieces between EOS tokens) is, with probability `fim_rate` (the paper's 0.5),
split at two cut points drawn uniformly from its token positions into prefix P, middle M and suffix S and
rewritten as PSM `<fim_prefix> P <fim_suffix> S <fim_middle> M` or, with probability `spm_rate` (0.5, the
paper's joint PSM + SPM training), as SPM `<fim_prefix> <fim_suffix> S <fim_middle> P M` (the variant of the
paper's appendix D that StarCoder uses); the other documents stay as they are. The three sentinels a reordered
document gains push the end of the block out (Megatron-LM's FIM truncates the same way). Cut points are token
positions, not the paper's characters: the cache holds tokens.

Everything after the reordering is causal language modelling (objectives/clm.py), attention inside documents
included. Validation logs both the FIM loss and, as `l2r_loss` / `l2r_perplexity`, the left-to-right loss on the
untransformed blocks, so what FIM costs left-to-right modelling stays visible.
"""
from dataclasses import dataclass

import torch

from .base import Objective, as_blocks, check_fraction, register
from .clm import CausalLM

FIM_TOKENS = ("<fim_prefix>", "<fim_middle>", "<fim_suffix>")


@dataclass
class FimOptions:
    fim_rate: float = 0.5  # share of documents reordered
    spm_rate: float = 0.5  # share of the reordered ones in SPM order (the rest PSM)

    def check(self):
        check_fraction("fim", "fim_rate", self.fim_rate, allow_one=True)
        check_fraction("fim", "spm_rate", self.spm_rate, allow_one=True)


@register
class FillInTheMiddle(Objective):
    name = "fim"
    title = "fill-in-the-middle (FIM)"
    hub_tag = "fill-in-the-middle"
    archs = ("decoder",)
    special_tokens = ("pad_token", "eos_token", *FIM_TOKENS)
    loss_meaning = ("next-token cross-entropy on documents of which fim_rate are reordered prefix / suffix / middle "
                    "around three sentinels (l2r_loss: the same model left to right on untransformed text)")
    Options = FimOptions
    document_aware = True

    def __init__(self, tokenizer, model_cfg, options=None, documents: bool = False):
        super().__init__(tokenizer, model_cfg, options, documents)
        self.left_to_right = CausalLM(tokenizer, model_cfg, documents=documents)
        self.prefix_id, self.middle_id, self.suffix_id = tokenizer.convert_tokens_to_ids(list(FIM_TOKENS))

    def block_length(self, seq_len):
        return self.left_to_right.block_length(seq_len)

    def collate(self, blocks, generator):
        block = as_blocks(blocks)
        n_real = self.real_tokens(block).sum(dim=1).tolist()
        rows = [self.transform(block[r], n, generator) for r, n in enumerate(n_real)]
        return self.left_to_right.collate(torch.stack(rows), generator)

    def transform(self, row: torch.Tensor, n_real: int, generator: torch.Generator) -> torch.Tensor:
        """The row with each document (its EOS kept in place) reordered or not, cut back to the row's length;
        padding (data.tail pad) stays at the end."""
        pieces = []
        for start, end, ends_with_eos in self.documents_of(row[:n_real]):
            pieces.append(self.reorder(row[start:end - ends_with_eos], generator))
            pieces.append(row[end - ends_with_eos:end])
        out = torch.full_like(row, self.pad_id)
        joined = torch.cat(pieces)[:len(row)] if pieces else row[:0]
        out[:len(joined)] = joined
        return out

    def reorder(self, document: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The document, or with probability fim_rate its PSM / SPM form (cut points: two uniform draws from
        0 .. len, sorted, so the middle may be empty)."""
        draw = torch.rand(2, generator=generator)
        if len(document) == 0 or draw[0] >= self.options.fim_rate:
            return document
        i, j = sorted(torch.randint(0, len(document) + 1, (2,), generator=generator).tolist())
        prefix, middle, suffix = document[:i], document[i:j], document[j:]
        pre, mid, suf = (document.new_tensor([t]) for t in (self.prefix_id, self.middle_id, self.suffix_id))
        if draw[1] < self.options.spm_rate:
            return torch.cat([pre, suf, suffix, mid, prefix, middle])
        return torch.cat([pre, prefix, suf, suffix, mid, middle])

    def loss(self, model, batch):
        return self.left_to_right.loss(model, batch)

    def validation_variants(self) -> dict:
        return {"l2r": self.left_to_right}
