"""Multi-head attention (self, causal, cross; grouped-query) through F.scaled_dot_product_attention."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


def build_mask(key_padding, q_len: int, k_len: int, causal: bool, bias=None):
    """One mask per forward, shared by every layer. Returns (attn_mask, is_causal) for SDPA.

    key_padding: Bool[B, k_len] with True on real tokens, or None. With no padding and no bias a causal model passes
    is_causal=True and no mask at all, so SDPA can pick its fastest kernel."""
    if key_padding is None and bias is None:
        return None, causal
    allowed = None
    if key_padding is not None:
        allowed = key_padding[:, None, None, :]
    if causal:
        device = key_padding.device if key_padding is not None else bias.device
        tri = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)
        allowed = tri if allowed is None else allowed & tri
    if bias is None:
        return allowed, False
    if allowed is None:
        return bias, False
    return bias.masked_fill(~allowed, torch.finfo(bias.dtype).min), False


class Attention(nn.Module):
    """Self-attention uses one fused q/k/v projection; cross-attention projects q from the decoder, k/v from the
    encoder. Setting `record_weights = True` switches to an explicit softmax path that keeps the weights in
    `last_weights` (for inspection only: SDPA returns no weights)."""

    def __init__(self, cfg: ModelConfig, cross: bool = False):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.kv_heads, cfg.dim_head
        self.cross = cross
        q_dim, kv_dim = self.n_heads * self.hd, self.n_kv * self.hd
        if cross:
            self.q = nn.Linear(cfg.d_model, q_dim, bias=cfg.bias)
            self.kv = nn.Linear(cfg.d_model, 2 * kv_dim, bias=cfg.bias)
        else:
            self.qkv = nn.Linear(cfg.d_model, q_dim + 2 * kv_dim, bias=cfg.bias)
        self.out = nn.Linear(q_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.attention_dropout_rate
        self.record_weights, self.last_weights = False, None

    def forward(self, x, mask=None, is_causal=False, rotary=None, memory=None):
        B, T, _ = x.shape
        if self.cross:
            q = self.q(x)
            k, v = self.kv(memory).split(self.n_kv * self.hd, dim=-1)
        else:
            q, k, v = self.qkv(x).split([self.n_heads * self.hd, self.n_kv * self.hd, self.n_kv * self.hd], dim=-1)
        q = q.view(B, T, self.n_heads, self.hd).transpose(1, 2)
        k = k.view(B, k.shape[1], self.n_kv, self.hd).transpose(1, 2)
        v = v.view(B, v.shape[1], self.n_kv, self.hd).transpose(1, 2)
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        if self.n_kv != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        if self.record_weights:
            y = self._explicit(q, k, v, mask, is_causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, self.n_heads * self.hd))

    def _explicit(self, q, k, v, mask, is_causal):
        scores = q @ k.transpose(-1, -2) * self.hd ** -0.5
        if is_causal:
            scores = scores.masked_fill(~torch.ones_like(scores, dtype=torch.bool).tril(), float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = scores.softmax(dim=-1)
        self.last_weights = weights.detach()
        return weights @ v
