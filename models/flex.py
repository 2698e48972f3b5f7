"""Document masks as FlexAttention block masks. SDPA with a dense boolean mask computes every tile of the score
matrix; FlexAttention skips the tiles a document (and causal) mask leaves empty. It is used only where it can
run: compiled (uncompiled it falls back to a slow reference path), with a backward pass (torch has none on CPU),
without attention dropout and without an additive score bias (T5's relative positions), all of which
`unsupported` names."""
from __future__ import annotations

from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from .config import ModelConfig

__all__ = ["BlockMask", "flex_attention", "document_block_mask", "unsupported"]


def document_block_mask(q_segments, k_segments, key_padding=None, causal: bool = False,
                        causal_rows=None, window: int = 0) -> BlockMask:
    """The block mask of models.attention.document_mask (and build_mask's causal triangle): a real query sees the
    real keys of its own document, at or before it when causal (in every row, or in the rows where the Bool[B]
    causal_rows is True); a padding query (segment -1) sees every key. window > 0: also only the keys of the
    sliding window (models.attention.window_band, per row like causal_rows; self-attention only)."""
    B, q_len = q_segments.shape
    k_len = k_segments.shape[1]
    shift = k_len - q_len  # build_mask's tril(k_len - q_len)

    def allowed(b, h, q, k):
        keep = q_segments[b, q] == k_segments[b, k]
        if key_padding is not None:
            keep = keep & key_padding[b, k]
        keep = keep | (q_segments[b, q] < 0)
        if window:
            near = (q - k).abs() <= window // 2
            if causal:
                latest = (q - k >= 0) & (q - k < window // 2)
                near = latest if causal_rows is None else (latest & causal_rows[b]) | (near & ~causal_rows[b])
            keep = keep & near
        if not causal:
            return keep
        if causal_rows is None:
            return keep & (q + shift >= k)
        return keep & ((q + shift >= k) | ~causal_rows[b])

    return create_block_mask(allowed, B, None, q_len, k_len, device=q_segments.device)


def unsupported(cfg: ModelConfig, device_type: str, compiled: bool) -> str | None:
    """Why FlexAttention cannot train this model here, or None when it can."""
    if device_type == "cpu":
        return "torch's FlexAttention has no backward pass on CPU"
    if not compiled:
        return "FlexAttention needs run.compile true (uncompiled, it runs a slow reference implementation)"
    if cfg.position == "relative":
        return "T5's relative position bias is an additive score bias, which the document block mask does not carry"
    if cfg.attention_dropout_rate > 0:
        return (f"FlexAttention has no attention dropout and this model has {cfg.attention_dropout_rate}; set "
                f"model.attention_dropout 0")
    return None
