"""One Transformer for all three shapes: encoder-only (BERT), decoder-only (GPT, Llama), encoder-decoder (BART, T5)."""
import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import Attention, build_mask, local_mask, positions_in_documents
from .config import ModelConfig
from .dropout import Dropout
from .family import get_family
from .flex import document_block_mask
from .fused_ce import linear_cross_entropy, plain_linear_cross_entropy
from .layers import ACTIVATION_FNS, FeedForward, RelativeBias, Rotary, make_norm, sinusoidal_table


class Block(nn.Module):
    """Self-attention (bidirectional or causal), optional cross-attention, feed-forward; pre- or post-norm."""

    def __init__(self, cfg: ModelConfig, cross: bool, first: bool = False):
        super().__init__()
        self.pre = cfg.norm_placement == "pre"
        self.self_attn = Attention(cfg)
        self.self_norm = nn.Identity() if first and not cfg.first_attn_norm else make_norm(cfg)
        self.cross_attn = Attention(cfg, cross=True) if cross else None
        self.cross_norm = make_norm(cfg) if cross else None
        self.ff, self.ff_norm = FeedForward(cfg), make_norm(cfg)
        self.dropout = Dropout(cfg.dropout)

    def _residual(self, x, norm, fn):
        if self.pre:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(self, x, mask, is_causal, rotary, memory=None, memory_mask=None):
        x = self._residual(x, self.self_norm, lambda h: self.self_attn(h, mask, is_causal, rotary))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_norm, lambda h: self.cross_attn(h, memory_mask, memory=memory))
        return self._residual(x, self.ff_norm, self.ff)


class Stack(nn.Module):
    """Embedding, the layers and the final norm of one side (encoder or decoder). Token embeddings are shared."""

    def __init__(self, cfg: ModelConfig, n_layers: int, causal: bool, cross: bool):
        super().__init__()
        self.cfg, self.causal = cfg, causal
        self.pos_emb = nn.Embedding(cfg.max_seq_len + cfg.position_offset, cfg.d_model) \
            if cfg.position == "learned" else None
        if cfg.position == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False)
        self.rotary = Rotary(cfg) if cfg.position == "rotary" else None
        self.local_rotary = Rotary(cfg, cfg.local_rope_theta) \
            if self.rotary is not None and cfg.local_attention and cfg.local_rope_theta is not None else None
        self.rel_bias = RelativeBias(cfg, bidirectional=not causal) if cfg.position == "relative" else None
        self.emb_norm = make_norm(cfg) if cfg.embedding_norm else None
        self.layers = nn.ModuleList(Block(cfg, cross, first=i == 0) for i in range(n_layers))
        self.final_norm = make_norm(cfg) if cfg.norm_placement == "pre" else None
        self.dropout = Dropout(cfg.dropout)
        self.flex = False  # document masks through FlexAttention (Transformer.use_attention_kernel)

    def forward(self, x, padding=None, memory=None, memory_padding=None, segments=None, memory_segments=None,
                causal_rows=None):
        """x: token embeddings [B, T, D]; padding: Bool[B, T] True on real tokens (None = no padding); segments:
        Long[B, T] document ids of a packed row (None = one sequence): attention stays inside a document and
        positions restart at each one; causal_rows: Bool[B] of a causal stack, False where a row attends
        bidirectionally (None = every row causal)."""
        x = self.dropout(self.embed_positions(x, segments))
        return self.run_layers(x, padding, memory, memory_padding, segments, memory_segments, causal_rows)

    def embed_positions(self, x, segments=None):
        """Token embeddings [B, T, D] plus positions, through the embedding norm: what the layers read, before
        dropout (ELECTRA's generator reads the discriminator's embeddings from here)."""
        T = x.shape[1]
        self.cfg.check_length(T)
        positions = positions_in_documents(segments) if segments is not None else None
        if self.pos_emb is not None:
            x = x + self.pos_emb((torch.arange(T, device=x.device) if positions is None else positions)
                                 + self.cfg.position_offset)
        elif self.cfg.position == "sinusoidal":
            x = x + (self.pos_table[:T] if positions is None else self.pos_table[positions]).to(x.dtype)
        return self.emb_norm(x) if self.emb_norm is not None else x

    def run_layers(self, x, padding=None, memory=None, memory_padding=None, segments=None, memory_segments=None,
                   causal_rows=None):
        """The layers and the final norm on embedded inputs x [B, T, D] (arguments as in forward)."""
        T = x.shape[1]
        positions = positions_in_documents(segments) if segments is not None and self.rotary is not None else None
        bias = self.rel_bias(T, T) if self.rel_bias is not None else None
        memory_mask, window = None, self.cfg.local_attention
        local = None  # (mask, is_causal) of the sliding-window layers
        if self.flex and segments is not None and bias is None:
            mask, is_causal = document_block_mask(segments, segments, padding, self.causal, causal_rows), False
            if window:
                local = document_block_mask(segments, segments, padding, self.causal, causal_rows, window), False
            if memory is not None:
                memory_mask = document_block_mask(segments, memory_segments, memory_padding)
        else:
            rows = causal_rows if self.causal else None
            mask, is_causal = build_mask(padding, T, T, self.causal, bias, segments, segments, rows)
            if window:
                local = local_mask(mask, is_causal, T, window, self.causal, x.device, rows)
            if memory is not None and (memory_padding is not None or segments is not None):
                memory_mask, _ = build_mask(memory_padding, T, memory.shape[1], False, None, segments,
                                            memory_segments)
        rotaries = [r if r is None or positions is None else partial(r, positions=positions)
                    for r in (self.rotary, self.local_rotary or self.rotary)]
        for i, layer in enumerate(self.layers):
            if self.cfg.layer_is_local(i):
                x = layer(x, *local, rotaries[1], memory, memory_mask)
            else:
                x = layer(x, mask, is_causal, rotaries[0], memory, memory_mask)
        return self.final_norm(x) if self.final_norm is not None else x


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=None)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.encoder = Stack(cfg, cfg.n_layers, causal=False, cross=False) if cfg.arch != "decoder" else None
        self.decoder = None
        if cfg.arch != "encoder":
            n = cfg.decoder_layers if cfg.arch == "encoder-decoder" else cfg.n_layers
            self.decoder = Stack(cfg, n, causal=True, cross=cfg.arch == "encoder-decoder")
        # LM head: optional BERT transform, projection (tied to tok_emb or its own), optional bias
        self.head_dense = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias) if cfg.head_transform else None
        self.head_norm = make_norm(cfg) if cfg.head_transform and cfg.head_norm else None
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.head_width, bias=False)
        self.head_bias = nn.Parameter(torch.zeros(cfg.head_width)) if cfg.head_bias else None
        self.emb_scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        self.compiled_ce = None  # set by compile(): the LM-head loss used on a GPU
        get_family(cfg.init).init(self, cfg)

    def compile(self, *args, **kwargs):
        """nn.Module.compile (the forward, in place), and the LM-head loss for GPU tensors: there the whole-logits
        cross-entropy compiled into fused kernels beats the chunked loop several times over
        (benchmarks/lm_head_loss.py); on CPU the chunked loop stays, the faster and leaner one there."""
        super().compile(*args, **kwargs)
        self.compiled_ce = torch.compile(plain_linear_cross_entropy, *args, **kwargs)

    def use_attention_kernel(self, kernel: str):
        """'flex': document masks (segment ids) go through FlexAttention block masks; 'sdpa': dense boolean
        masks through SDPA (the default). Rows without segment ids always take SDPA."""
        if kernel not in ("sdpa", "flex"):
            raise ValueError(f"unknown attention kernel {kernel!r}; choose sdpa or flex")
        for stack in (self.encoder, self.decoder):
            if stack is not None:
                stack.flex = kernel == "flex"

    def embed(self, ids, token_type_ids=None):
        x = self.tok_emb(ids) * self.emb_scale
        if self.type_emb is not None:
            x = x + self.type_emb(token_type_ids if token_type_ids is not None else torch.zeros_like(ids))
        return x

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, segment_ids=None):
        return self.encoder(self.embed(input_ids, token_type_ids), _padding(attention_mask), segments=segment_ids)

    def decode(self, decoder_input_ids, encoder_hidden=None, attention_mask=None, decoder_attention_mask=None,
               segment_ids=None, decoder_segment_ids=None):
        return self.decoder(self.embed(decoder_input_ids), _padding(decoder_attention_mask),
                            memory=encoder_hidden, memory_padding=_padding(attention_mask),
                            segments=decoder_segment_ids, memory_segments=segment_ids)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, decoder_input_ids=None,
                decoder_attention_mask=None, encoder_hidden=None, segment_ids=None, decoder_segment_ids=None,
                causal=None):
        """Final hidden states: of the encoder (encoder), the decoder (decoder, encoder-decoder). attention_mask /
        decoder_attention_mask: 1 = token, 0 = padding; pass None when nothing is padded (the fast path).
        segment_ids / decoder_segment_ids: the document of each position in packed rows (-1 on padding; None =
        each row is one sequence); attention, cross-attention included, stays inside a document and positions
        restart at each one (t5x's segment ids). causal: Bool[B] of a decoder, False where a row attends
        bidirectionally (the GPT-BERT hybrid's masked rows); None = every row causal (the no-mask fast path)."""
        arch = self.config.arch
        if causal is not None and arch != "decoder":
            raise ValueError(f"causal (per-row attention) applies to decoder models, not {arch} models")
        if arch == "encoder":
            return self.encode(input_ids, attention_mask, token_type_ids, segment_ids)
        if arch == "decoder":
            return self.decoder(self.embed(input_ids, token_type_ids), _padding(attention_mask), segments=segment_ids,
                                causal_rows=causal)
        if decoder_input_ids is None:
            raise ValueError("an encoder-decoder model needs decoder_input_ids; pass the shifted targets")
        if (segment_ids is None) != (decoder_segment_ids is None):
            raise ValueError("an encoder-decoder model needs both segment_ids and decoder_segment_ids, or neither")
        if encoder_hidden is None:
            encoder_hidden = self.encode(input_ids, attention_mask, token_type_ids, segment_ids)
        return self.decode(decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask, segment_ids,
                           decoder_segment_ids)

    def logits(self, hidden):
        """The head on any [..., d_model] tensor: [..., vocab] (an LM head; objectives call it on the positions
        they predict only) or [..., head_outputs]."""
        hidden, weight = self._head_input(hidden)
        return F.linear(hidden, weight, self.head_bias)

    def lm_loss(self, hidden, labels):
        """Mean cross-entropy of the LM head on hidden [..., d_model] against labels [...] (-100 ignored), and the
        count of correct argmax predictions, without materializing the full logits (see fused_ce)."""
        hidden, weight = self._head_input(hidden.reshape(-1, hidden.shape[-1]))
        on_gpu = self.compiled_ce is not None and hidden.device.type != "cpu"
        return (self.compiled_ce if on_gpu else linear_cross_entropy)(hidden, weight, self.head_bias,
                                                                       labels.reshape(-1))

    def _head_input(self, hidden):
        """BERT's transform, T5's tied-head scaling, and the projection matrix (tied or not)."""
        if self.head_dense is not None:
            hidden = ACTIVATION_FNS[self.config.activation](self.head_dense(hidden))
            if self.head_norm is not None:
                hidden = self.head_norm(hidden)
        if self.head is not None:
            return hidden, self.head.weight
        if self.config.scale_tied_head:
            hidden = hidden * self.config.d_model ** -0.5
        return hidden, self.tok_emb.weight

    def attention_modules(self):
        """(stack name, layer index, kind, module) for every attention module, for inspection tools."""
        for name in ("encoder", "decoder"):
            stack = getattr(self, name)
            for i, layer in enumerate(stack.layers if stack is not None else []):
                yield name, i, "self", layer.self_attn
                if layer.cross_attn is not None:
                    yield name, i, "cross", layer.cross_attn


def _padding(attention_mask):
    """HF attention_mask (1 = token, 0 = padding) -> Bool padding mask. None means nothing is padded: callers that
    know their batch is unpadded pass none, so attention takes the no-mask fast path without a host sync."""
    return None if attention_mask is None else attention_mask.bool()


def num_params(cfg: ModelConfig, non_embedding: bool = False) -> int:
    """Exact parameter count of Transformer(cfg), built on the meta device (no memory used)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    total = sum(p.numel() for p in model.parameters())
    if non_embedding:
        total -= model.tok_emb.weight.numel()
    return total
