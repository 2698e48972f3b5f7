"""The initialization most families share (BERT, GPT-2, Llama, BART): N(0, init_std) for linear and embedding
weights, zero biases, unit norm gains. Family files add their own touches (models/families/)."""
import math

import torch.nn as nn

from .attention import Attention
from .layers import FeedForward


def normal_init(model: nn.Module, cfg) -> None:
    std = cfg.init_std
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def scale_residual_projections(model: nn.Module, cfg) -> None:
    """GPT-2: the projections that write into the residual stream drawn with std / sqrt(2 * n_layers)."""
    std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    for module in model.modules():
        if isinstance(module, Attention):
            nn.init.normal_(module.out.weight, 0.0, std)
        elif isinstance(module, FeedForward):
            nn.init.normal_(module.down.weight, 0.0, std)


def zero_padding_row(model: nn.Module, cfg) -> None:
    """BERT, BART: the padding row of the token embedding starts at zero."""
    model.tok_emb.weight.data[cfg.pad_token_id].zero_()
