"""Initialization as in each original architecture (cfg.init names the family)."""
import math

import torch.nn as nn

from .attention import Attention
from .layers import FeedForward, RelativeBias


def init_weights(model: nn.Module, cfg) -> None:
    if cfg.init == "t5":
        return _init_t5(model, cfg)
    if cfg.init == "transformer":
        return _init_transformer(model, cfg)
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
    if cfg.init == "gpt2":  # residual projections scaled by 1/sqrt(2 * n_layers)
        for module in model.modules():
            if isinstance(module, Attention):
                nn.init.normal_(module.out.weight, 0.0, std / math.sqrt(2 * cfg.n_layers))
            elif isinstance(module, FeedForward):
                nn.init.normal_(module.down.weight, 0.0, std / math.sqrt(2 * cfg.n_layers))
    if cfg.init in ("bert", "bart"):  # padding row of the token embedding starts at zero
        model.tok_emb.weight.data[cfg.pad_token_id].zero_()


def _init_t5(model, cfg):
    """Mesh-TF scheme: std depends on fan-in. Our queries hold T5's query weights times sqrt(head_dim) (the
    mapping folds T5's unscaled attention into them), so their std is d_model**-0.5 rather than
    (d_model * d_kv)**-0.5."""
    d, inner = cfg.d_model, cfg.n_heads * cfg.dim_head
    nn.init.normal_(model.tok_emb.weight, 0.0, 1.0)
    if model.head is not None:
        nn.init.normal_(model.head.weight, 0.0, 1.0)
    for module in model.modules():
        if isinstance(module, Attention):
            linear_in = [module.q, module.kv] if module.cross else [module.qkv]
            for lin in linear_in:
                nn.init.normal_(lin.weight, 0.0, d ** -0.5)
            nn.init.normal_(module.out.weight, 0.0, inner ** -0.5)
        elif isinstance(module, FeedForward):
            nn.init.normal_(module.up.weight, 0.0, d ** -0.5)
            nn.init.normal_(module.down.weight, 0.0, cfg.d_ff ** -0.5)
        elif isinstance(module, RelativeBias):
            nn.init.normal_(module.bias.weight, 0.0, d ** -0.5)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)


def _init_transformer(model, cfg):
    """As fairseq's Transformer: Xavier-uniform linear layers, embeddings N(0, d_model**-0.5)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, cfg.d_model ** -0.5)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    model.tok_emb.weight.data[cfg.pad_token_id].zero_()
