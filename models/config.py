"""ModelConfig: everything about the network in one dataclass, with presets that reproduce real architectures."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ARCHS = ("encoder", "decoder", "encoder-decoder")
POSITIONS = ("learned", "sinusoidal", "rotary", "relative", "none")
NORMS = ("layernorm", "rmsnorm")
PLACEMENTS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu")
INITS = ("bert", "gpt2", "llama", "bart", "t5", "transformer")


@dataclass
class ModelConfig:
    arch: str = "encoder"
    vocab_size: int = 30522
    d_model: int = 768
    n_layers: int = 12
    n_decoder_layers: int | None = None  # encoder-decoder only; defaults to n_layers
    n_heads: int = 12
    n_kv_heads: int | None = None  # grouped-query attention; defaults to n_heads
    head_dim: int | None = None  # defaults to d_model // n_heads
    d_ff: int = 3072
    max_seq_len: int = 512
    position: str = "learned"
    position_offset: int = 0  # BART looks positions up at index + 2
    rope_theta: float = 10000.0
    relative_buckets: int = 32
    relative_max_distance: int = 128
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"
    embedding_norm: bool = False
    activation: str = "gelu"
    bias: bool = True
    dropout: float = 0.1
    attention_dropout: float | None = None  # defaults to dropout
    activation_dropout: float | None = None  # inside the feed-forward, after the activation; see the property
    tie_embeddings: bool = True
    type_vocab_size: int = 0  # BERT's token-type (segment) embeddings
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model)
    head_transform: bool = False  # BERT: dense + activation + norm before the output projection
    head_bias: bool = False  # BERT's cls.predictions.bias, BART's final_logits_bias
    scale_tied_head: bool = False  # T5 scales the decoder output by d_model**-0.5 when the head is tied
    init: str = "bert"
    init_std: float = 0.02
    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None

    def __post_init__(self):
        self.validate()

    # ---- presets -------------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        """A real architecture (bert, gpt2, llama, bart, t5, transformer), sized by keyword overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model option(s) {', '.join(sorted(unknown))}; "
                             f"valid options are the fields of ModelConfig")
        return cls(**{**PRESETS[name], **overrides})

    # ---- derived sizes -------------------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def attention_dropout_rate(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def activation_dropout_rate(self) -> float:
        """Unset: `dropout` in gated feed-forwards (T5 v1.1), none otherwise (BERT, GPT-2, BART's default)."""
        if self.activation_dropout is not None:
            return self.activation_dropout
        return self.dropout if self.gated else 0.0

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers if self.n_decoder_layers is not None else self.n_layers

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu")

    def validate(self):
        def choice(field, options):
            value = getattr(self, field)
            if value not in options:
                raise ValueError(f"unknown {field} {value!r}; choose one of {', '.join(options)}")

        choice("arch", ARCHS)
        choice("position", POSITIONS)
        choice("norm", NORMS)
        choice("norm_placement", PLACEMENTS)
        choice("activation", ACTIVATIONS)
        choice("init", INITS)
        for field in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}; "
                             f"pick n_heads dividing d_model (or set head_dim)")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}; "
                             f"pick n_kv_heads dividing n_heads")
        if self.position == "rotary" and self.dim_head % 2:
            raise ValueError(f"rotary positions need an even head dimension, got {self.dim_head}; "
                             f"change d_model / n_heads")
        if self.position == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.n_decoder_layers is not None and self.arch != "encoder-decoder":
            raise ValueError(f"n_decoder_layers applies to encoder-decoder models only, not {self.arch}; "
                             f"remove it or use n_layers")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            rate = getattr(self, name)
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")

    def check_length(self, length: int, what: str = "sequence"):
        if length > self.max_seq_len:
            raise ValueError(f"{what} length {length} is longer than max_seq_len {self.max_seq_len}; "
                             f"shorten the sequence or raise model.max_seq_len")

    # ---- size and compute ----------------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        """Exact parameter count, from the model built on the meta device (no memory used)."""
        import torch
        from .transformer import Transformer

        with torch.device("meta"):
            model = Transformer(self)
        total = sum(p.numel() for p in model.parameters())
        if non_embedding:
            total -= model.tok_emb.weight.numel()
        return total

    def _layer_matmul_params(self, cross: bool) -> int:
        d, hd = self.d_model, self.dim_head
        attn = d * hd * (self.n_heads + 2 * self.kv_heads) + self.n_heads * hd * d
        cross_attn = (d * hd * (self.n_heads + 2 * self.kv_heads) + self.n_heads * hd * d) if cross else 0
        ff = d * self.d_ff * (3 if self.gated else 2)
        return attn + cross_attn + ff

    def train_flops(self, enc_tokens: int, dec_tokens: int, predicted: int, enc_len: int, dec_len: int) -> float:
        """Training FLOPs (forward + backward = 3x forward) of one batch: 6 x matmul params per token through each
        stack, plus attention scores (12 x layers x heads x head_dim x attended length), plus the head per
        predicted token. Encoder-decoder models count encoder and decoder tokens separately."""
        attn_width = self.n_heads * self.dim_head
        head = self.d_model * self.vocab_size + (self.d_model ** 2 if self.head_transform else 0)
        flops = 6.0 * head * predicted
        if self.arch in ("encoder", "encoder-decoder"):
            flops += enc_tokens * (6 * self.n_layers * self._layer_matmul_params(False)
                                   + 12 * self.n_layers * attn_width * enc_len)
        if self.arch == "decoder":
            flops += dec_tokens * (6 * self.n_layers * self._layer_matmul_params(False)
                                   + 12 * self.n_layers * attn_width * dec_len)
        if self.arch == "encoder-decoder":
            flops += dec_tokens * (6 * self.decoder_layers * self._layer_matmul_params(True)
                                   + 12 * self.decoder_layers * attn_width * (dec_len + enc_len))
        return flops

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per input token with every token predicted (encoder-decoder: per encoder+decoder pair
        of equal length seq_len)."""
        return self.train_flops(1, 1, 1, seq_len, seq_len)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model option(s) {', '.join(sorted(unknown))} in saved config; "
                             f"was it written by a newer version?")
        return cls(**values)


PRESETS: dict[str, dict] = {
    # BERT (Devlin et al.): post-norm, learned positions, token types, embedding LayerNorm, exact GELU, MLM head
    # transform, tied decoder with its own bias.
    "bert": dict(arch="encoder", position="learned", norm="layernorm", norm_eps=1e-12, norm_placement="post",
                 embedding_norm=True, activation="gelu", type_vocab_size=2, head_transform=True, head_bias=True,
                 tie_embeddings=True, init="bert", pad_token_id=0),
    # GPT-2: pre-norm with a final LayerNorm, learned positions, tanh GELU, tied head without bias.
    "gpt2": dict(arch="decoder", vocab_size=50257, max_seq_len=1024, position="learned", norm="layernorm",
                 norm_eps=1e-5, norm_placement="pre", activation="gelu_tanh", tie_embeddings=True, init="gpt2",
                 bos_token_id=50256, eos_token_id=50256, pad_token_id=50256),
    # Llama: RMSNorm pre-norm, rotary positions (split halves), SwiGLU, no biases, untied head.
    "llama": dict(arch="decoder", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
                  max_seq_len=2048, position="rotary", norm="rmsnorm", norm_eps=1e-6, norm_placement="pre",
                  activation="swiglu", bias=False, dropout=0.0, tie_embeddings=False, init="llama",
                  bos_token_id=1, eos_token_id=2, pad_token_id=0),
    # BART: post-norm, learned positions offset by 2, embedding LayerNorm in each stack, exact GELU, tied head plus
    # final_logits_bias; the decoder starts with </s>.
    "bart": dict(arch="encoder-decoder", vocab_size=50265, n_layers=6, n_heads=12, max_seq_len=1024,
                 position="learned", position_offset=2, norm="layernorm", norm_eps=1e-5, norm_placement="post",
                 embedding_norm=True, activation="gelu", head_bias=True, tie_embeddings=True, init="bart",
                 pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
    # T5 v1.1: RMSNorm pre-norm, relative position buckets, gated GELU, no biases, unscaled attention (folded into
    # the query weights by the mapping), untied head; the decoder starts with <pad>.
    "t5": dict(arch="encoder-decoder", vocab_size=32128, d_model=512, n_layers=8, n_heads=6, head_dim=64,
               d_ff=1024, position="relative", norm="rmsnorm", norm_eps=1e-6, norm_placement="pre",
               activation="geglu", bias=False, tie_embeddings=False, scale_tied_head=True, init="t5",
               pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
    # "Attention Is All You Need": sinusoidal positions, post-norm, ReLU, embeddings scaled by sqrt(d_model).
    "transformer": dict(arch="encoder-decoder", vocab_size=37000, d_model=512, n_layers=6, n_heads=8, d_ff=2048,
                        position="sinusoidal", norm="layernorm", norm_eps=1e-6, norm_placement="post",
                        activation="relu", scale_embeddings=True, tie_embeddings=True, init="transformer",
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
}
