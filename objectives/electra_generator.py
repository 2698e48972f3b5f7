"""ELECTRA's generator: a small MLM encoder that reads the discriminator's embeddings (token, position, token type
and their norm: shared, as in the original), projects them to its own width when it is narrower, runs its own
layers, and predicts tokens through a dense + GELU + norm back to the embedding width and the shared (tied) token
embeddings plus a bias of its own. Its parameters are the objective's (`objective.module`); the discriminator's
embeddings are read from the model at every call, never registered here, so each weight is stored once.

Sizes follow google-research/electra: width = round(d_model * generator_size), depth = round(n_layers *
generator_layers), d_ff = 4 * width, heads = max(1, width // 64). <-> transformers ElectraForMaskedLM with
embedding_size = the discriminator's d_model and `electra.embeddings_project` when the widths differ.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import ModelConfig
from models.convert import check_family
from models.dropout import Dropout
from models.errors import UserError
from models.families.electra import hf_config, layer_table
from models.families.mapping import entry, export_with, import_with, linear, norm
from models.init import normal_init
from models.layers import make_norm
from models.transformer import Stack

SHARED = ("tok_emb.", "type_emb.", "encoder.pos_emb.", "encoder.emb_norm.")  # the discriminator's, read here


def generator_config(model_cfg: ModelConfig, size: float, layers: float) -> ModelConfig:
    """The generator's layers as a ModelConfig: the discriminator's settings at the generator's sizes; positions
    added to the shared embeddings (learned, sinusoidal) are not its own."""
    width = int(round(model_cfg.d_model * size))
    heads = max(1, width // 64)
    if width < 1 or width % heads:
        raise UserError(f"objective 'electra': a generator {width} wide cannot have {heads} heads; pick "
                        f"generator_size so that d_model * generator_size is a multiple of 64 or below 128")
    own_positions = model_cfg.position not in ("learned", "sinusoidal")
    return dataclasses.replace(
        model_cfg, d_model=width, n_heads=heads, n_kv_heads=None, head_dim=None, d_ff=4 * width,
        n_layers=max(1, int(round(model_cfg.n_layers * layers))),
        position=model_cfg.position if own_positions else "none", embedding_norm=False, head_transform=False,
        head_bias=False, head_outputs=0, tie_embeddings=True)


class Generator(nn.Module):
    def __init__(self, model_cfg: ModelConfig, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.project = nn.Linear(model_cfg.d_model, cfg.d_model) if cfg.d_model != model_cfg.d_model else None
        self.encoder = Stack(cfg, cfg.n_layers, causal=False, cross=False)
        self.head_dense = nn.Linear(cfg.d_model, model_cfg.d_model)
        self.head_norm = make_norm(model_cfg)
        self.head_bias = nn.Parameter(torch.zeros(model_cfg.vocab_size))
        self.dropout = Dropout(model_cfg.dropout)
        normal_init(self, cfg)

    def forward(self, model, input_ids, attention_mask=None, token_type_ids=None, segment_ids=None, select=None):
        """Logits [n, vocab] at the positions `select` (Bool [B, L]; None: all, [B, L, vocab]) of input_ids, read
        through `model`'s (the discriminator's) embeddings. The training call: a data-parallel wrapper runs
        forward only."""
        hidden = self.hidden(model, input_ids, attention_mask, token_type_ids, segment_ids)
        return self.logits(model, hidden if select is None else hidden[select])

    def hidden(self, model, input_ids, attention_mask=None, token_type_ids=None, segment_ids=None):
        """Hidden states [B, L, width]."""
        x = model.encoder.embed_positions(model.embed(input_ids, token_type_ids), segment_ids)
        x = self.dropout(x)
        if self.project is not None:
            x = self.project(x)
        padding = None if attention_mask is None else attention_mask.bool()
        return self.encoder.run_layers(x, padding, segments=segment_ids)

    def logits(self, model, hidden):
        """[..., vocab] from hidden [..., width]: transform, then the shared token embeddings and its own bias."""
        hidden = self.head_norm(F.gelu(self.head_dense(hidden)))
        return F.linear(hidden, model.tok_emb.weight, self.head_bias)


    def train_flops(self, tokens: int, length: int, predicted: float) -> float:
        """Training FLOPs (6 x multiply-adds) of `tokens` tokens in rows of `length`, `predicted` of them through
        the head (dense to the embedding width, then the vocabulary)."""
        d, width = self.head_dense.out_features, self.cfg.d_model
        project = 6.0 * d * width * tokens if self.project is not None else 0.0
        head = 6.0 * (width * d + d * self.head_bias.numel()) * predicted
        return self.cfg.train_flops(tokens, 0, 0, length, 0) + project + head


# ---- transformers ElectraForMaskedLM, both directions ---------------------------------------------------------
def _table(projected: bool) -> list:
    return [
        entry("tok_emb.weight", ["electra.embeddings.word_embeddings.weight", "generator_lm_head.weight"]),
        entry("type_emb.weight", "electra.embeddings.token_type_embeddings.weight"),
        entry("encoder.pos_emb.weight", "electra.embeddings.position_embeddings.weight"),
        *norm("encoder.emb_norm", "electra.embeddings.LayerNorm"),
        *(linear("generator.project", "electra.embeddings_project") if projected else []),
        *layer_table("generator.encoder.layers.{i}", "electra.encoder.layer.{i}"),
        *linear("generator.head_dense", "generator_predictions.dense"),
        *norm("generator.head_norm", "generator_predictions.LayerNorm"),
        entry("generator.head_bias", "generator_lm_head.bias"),
    ]


def to_transformers(model, generator: Generator):
    """An ElectraForMaskedLM (eval mode) holding the generator and the embeddings it shares with `model`."""
    from transformers import ElectraForMaskedLM

    model_cfg, cfg = model.config, generator.cfg
    check_family(model_cfg, "electra")
    hf = ElectraForMaskedLM(hf_config(model_cfg, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                                      num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff,
                                      architectures=["ElectraForMaskedLM"]))
    ours = {k: v for k, v in model.state_dict().items() if k.startswith(SHARED)}
    ours.update({f"generator.{k}": v for k, v in generator.state_dict().items()})
    hf.load_state_dict(export_with(_table(generator.project is not None), ours, cfg), strict=True)
    return hf.eval()


def from_transformers_state(hf_state: dict, generator: Generator) -> dict:
    """An ElectraForMaskedLM state dict -> (the generator's state dict, the shared embeddings it holds in our
    names); load the first into the generator, the second belongs to the discriminator."""
    ours = import_with(_table(generator.project is not None), hf_state, generator.cfg,
                       ignore=(r"position_ids$", r"token_type_ids$"))
    own = {k[len("generator."):]: v for k, v in ours.items() if k.startswith("generator.")}
    return own, {k: v for k, v in ours.items() if not k.startswith("generator.")}
