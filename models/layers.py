"""Building blocks other than attention: norms, feed-forward, and the four kinds of position information."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .dropout import Dropout


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


ACTIVATION_FNS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swiglu": F.silu,  # gate activation of the gated variants
    "geglu": lambda x: F.gelu(x, approximate="tanh"),  # as T5 v1.1 ("gated-gelu" = gelu_new)
    "geglu_exact": F.gelu,  # ModernBERT's GeGLU gates with the exact (erf) GELU
}


class FeedForward(nn.Module):
    """Two-layer MLP; the gated variants (SwiGLU, GeGLU) compute gate and value with one fused matmul. Dropout
    after the activation where the family has it (T5, BART's activation_dropout)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gated = cfg.gated
        self.act = ACTIVATION_FNS[cfg.activation]
        self.up = nn.Linear(cfg.d_model, cfg.d_ff * (2 if self.gated else 1), bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = Dropout(cfg.activation_dropout_rate)

    def forward(self, x):
        h = self.up(x)
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            h = self.act(gate) * value
        else:
            h = self.act(h)
        return self.down(self.dropout(h))


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), as in "Attention Is All You Need"."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class Rotary(nn.Module):
    """Rotary embeddings in the split-halves layout (Llama's rotate_half), applied to queries and keys."""

    def __init__(self, cfg: ModelConfig, theta: float | None = None):
        super().__init__()
        dim = cfg.dim_head
        inv_freq = 1.0 / ((theta or cfg.rope_theta) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float32), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x, positions=None):  # x: [B, H, T, hd]; positions: Long[B, T] or None (0 .. T-1)
        if positions is None:
            T = x.shape[-2]
            cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        else:
            cos, sin = self.cos[positions][:, None].to(x.dtype), self.sin[positions][:, None].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class RelativeBias(nn.Module):
    """T5's bucketed relative position bias: one learned scalar per (bucket, head), added to attention scores."""

    def __init__(self, cfg: ModelConfig, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.buckets, self.max_distance = cfg.relative_buckets, cfg.relative_max_distance
        self.bias = nn.Embedding(cfg.relative_buckets, cfg.n_heads)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        buckets, out = self.buckets, torch.zeros_like(relative)
        if self.bidirectional:
            buckets //= 2
            out += (relative > 0).long() * buckets
            relative = relative.abs()
        else:
            relative = -torch.clamp(relative, max=0)
        max_exact = buckets // 2
        is_small = relative < max_exact
        large = max_exact + (torch.log(relative.float() / max_exact) / math.log(self.max_distance / max_exact)
                             * (buckets - max_exact)).long()
        large = torch.clamp(large, max=buckets - 1)
        return out + torch.where(is_small, relative, large)

    def forward(self, q_len: int, k_len: int) -> torch.Tensor:  # -> [1, H, q_len, k_len]
        device = self.bias.weight.device
        relative = torch.arange(k_len, device=device)[None, :] - torch.arange(q_len, device=device)[:, None]
        return self.bias(self.bucket(relative)).permute(2, 0, 1)[None]
