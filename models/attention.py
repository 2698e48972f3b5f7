"""Multi-head attention (self, causal, cross; grouped-query) through F.scaled_dot_product_attention."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .dropout import dropout, uses_cpu_mask
from .flex import BlockMask, flex_attention


def build_mask(key_padding, q_len: int, k_len: int, causal: bool, bias=None, q_segments=None, k_segments=None,
               causal_rows=None):
    """One mask per forward, shared by every layer. Returns (attn_mask, is_causal) for SDPA.

    key_padding: Bool[B, k_len] with True on real tokens, or None. q_segments / k_segments: Long[B, q_len] /
    [B, k_len] document ids of packed rows (-1 on padding), or None: a query then sees only keys of its own
    document. causal_rows: Bool[B] or None, for a causal stack only: rows with False attend bidirectionally (the
    GPT-BERT hybrid's masked rows), the others causally. With no padding, no segments, no bias and no causal_rows a
    causal model passes is_causal=True and no mask at all, so SDPA can pick its fastest kernel."""
    if key_padding is None and bias is None and q_segments is None and causal_rows is None:
        return None, causal
    allowed = None
    if key_padding is not None:
        allowed = key_padding[:, None, None, :]
    if q_segments is not None:
        allowed = document_mask(q_segments, k_segments, key_padding)
    if causal:
        device = next(t for t in (key_padding, q_segments, bias, causal_rows) if t is not None).device
        tri = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)
        if causal_rows is not None:
            tri = tri | ~causal_rows.bool()[:, None, None, None]
        allowed = tri if allowed is None else allowed & tri
    if bias is None:
        return allowed, False
    if allowed is None:
        return bias, False
    return bias.masked_fill(~allowed, torch.finfo(bias.dtype).min), False


def window_band(T: int, window: int, causal: bool, device=None, causal_rows=None):
    """Bool[T, T] of a sliding-window layer: bidirectional, a query sees the keys with |q - k| <= window // 2
    (ModernBERT's local_attention = 128: 64 either side); causal, the window // 2 latest keys, itself included
    (transformers' ModernBertDecoder). With causal_rows (Bool[B], a causal stack's per-row choice, as in
    build_mask): Bool[B, 1, T, T], the causal band in those rows and the bidirectional one in the others."""
    i = torch.arange(T, device=device)
    distance = i[:, None] - i[None, :]
    half = window // 2
    both_sides = distance.abs() <= half
    if not causal:
        return both_sides
    latest = (distance >= 0) & (distance < half)
    if causal_rows is None:
        return latest
    return torch.where(causal_rows.bool()[:, None, None, None], latest, both_sides)


def local_mask(mask, is_causal: bool, T: int, window: int, causal: bool, device=None, causal_rows=None):
    """build_mask's (mask, is_causal) for the layers of a sliding window: the same mask, also inside the band.
    A query always keeps itself, so a padding row is never empty (an empty row makes SDPA return NaN)."""
    band = window_band(T, window, causal, device, causal_rows)
    if mask is None:
        return band, False
    if mask.dtype != torch.bool:
        return mask.masked_fill(~band, torch.finfo(mask.dtype).min), False
    return (mask & band) | torch.eye(T, dtype=torch.bool, device=device), False


def document_mask(q_segments, k_segments, key_padding=None):
    """Bool[B, 1, q_len, k_len]: a real query sees the real keys of its own document. A padding query (segment
    -1) sees every key: its output is never used, and a row with no key at all would make SDPA return NaN."""
    allowed = q_segments[:, :, None] == k_segments[:, None, :]
    if key_padding is not None:
        allowed = allowed & key_padding[:, None, :]
    return (allowed | (q_segments < 0)[:, :, None])[:, None]


def positions_in_documents(segments):
    """Long[B, T]: each token's position counted from the start of its document (segment ids change there)."""
    T = segments.shape[1]
    index = torch.arange(T, device=segments.device).expand_as(segments)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return index - torch.where(starts, index, 0).cummax(dim=1).values


class Attention(nn.Module):
    """Self-attention uses one fused q/k/v projection; cross-attention projects q from the decoder, k/v from the
    encoder. SDPA computes attention (FlexAttention when the mask is a block mask, see models/flex.py), except in two
    cases that take the explicit softmax path: `record_weights =
    True` keeps the weights in `last_weights` (SDPA returns none), and training with attention dropout on CPU, where
    SDPA has no fused kernel and runs the same math with torch's costlier dropout mask (see models/dropout.py)."""

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
        p = self.dropout if self.training else 0.0
        if isinstance(mask, BlockMask):  # document masks under Transformer.use_attention_kernel("flex")
            y = flex_attention(q, k, v, block_mask=mask)
            return self.out(y.transpose(1, 2).reshape(B, T, self.n_heads * self.hd))
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        if self.record_weights or (p > 0.0 and uses_cpu_mask(q)):
            y = self._explicit(q, k, v, mask, is_causal, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(B, T, self.n_heads * self.hd))

    def _explicit(self, q, k, v, mask, is_causal, p):
        scores = (q * self.hd ** -0.5) @ k.transpose(-1, -2)
        if is_causal:
            T, S = scores.shape[-2:]
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        if mask is not None and mask.dtype == torch.bool:
            scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
        elif mask is not None:
            scores += mask
        weights = scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype)  # fp32 softmax under autocast, like SDPA
        if self.record_weights:
            self.last_weights = weights.detach()
        return dropout(weights, p) @ v
