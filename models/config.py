"""ModelConfig: everything about the network in one dataclass, with presets that reproduce real architectures."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .family import family_names, get_family

ARCHS = ("encoder", "decoder", "encoder-decoder")
POSITIONS = ("learned", "sinusoidal", "rotary", "relative", "none")
NORMS = ("layernorm", "rmsnorm")
PLACEMENTS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu", "geglu_exact")

# Fields that change neither the shapes nor the values of trained weights: training noise, how fresh weights are
# drawn, and which ids are special. Resume, model.init_from and export ignore them when comparing architectures.
WEIGHT_NEUTRAL_FIELDS = frozenset({"dropout", "attention_dropout", "activation_dropout", "init", "init_std",
                                   "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"})
# Fields that size a model rather than choose its architecture.
SIZE_FIELDS = frozenset({"d_model", "n_layers", "n_decoder_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                         "vocab_size", "max_seq_len"})


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
    local_rope_theta: float | None = None  # rotary base of the sliding-window layers (None = rope_theta)
    local_attention: int = 0  # ModernBERT's total sliding window of local layers (0 = every layer global)
    global_attn_every_n_layers: int = 1  # with local_attention: layer i is global when i % n == 0, local otherwise
    relative_buckets: int = 32
    relative_max_distance: int = 128
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"
    embedding_norm: bool = False
    first_attn_norm: bool = True  # False: layer 0's attention reads the embedding norm's output (ModernBERT)
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
    head_norm: bool = True  # head_transform's norm after the activation (ELECTRA's discriminator head has none)
    head_outputs: int = 0  # logits per position: 0 = the vocabulary (an LM head); ELECTRA's discriminator: 1
    scale_tied_head: bool = False  # T5 scales the decoder output by d_model**-0.5 when the head is tied
    init: str = "bert"  # the family whose initialization scheme draws fresh weights
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
        """A registered family's architecture (models/families/), sized by keyword overrides."""
        family = get_family(name)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model option(s) {', '.join(sorted(unknown))}; "
                             f"valid options are the fields of ModelConfig")
        return cls(**{**family.preset, **overrides})

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
    def head_width(self) -> int:
        """Logits per position: the vocabulary, or head_outputs."""
        return self.head_outputs or self.vocab_size

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu", "geglu_exact")

    def layer_is_local(self, index: int) -> bool:
        """Whether layer `index` attends within the sliding window (ModernBERT: every layer but each n-th)."""
        return self.local_attention > 0 and index % self.global_attn_every_n_layers != 0

    def attended_length(self, index: int, seq_len: int) -> int:
        """Keys a query of layer `index` attends to at most: the sequence on global layers; on local ones the
        window, |q - k| <= local_attention // 2 in an encoder, the local_attention // 2 latest keys in a decoder
        (transformers' ModernBert and ModernBertDecoder; models/attention.py, window_band)."""
        if not self.layer_is_local(index):
            return seq_len
        half = self.local_attention // 2
        return min(seq_len, half if self.arch == "decoder" else 2 * half + 1)

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
        choice("init", family_names())
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
        if self.local_attention == 1 or self.local_attention < 0:
            raise ValueError(f"local_attention must be 0 (every layer global) or a window of at least 2 tokens, got "
                             f"{self.local_attention}")
        if self.global_attn_every_n_layers < 1:
            raise ValueError(f"global_attn_every_n_layers must be at least 1, got {self.global_attn_every_n_layers}")
        if self.head_outputs < 0:
            raise ValueError(f"head_outputs must be 0 (the vocabulary) or positive, got {self.head_outputs}")
        if self.head_outputs and self.tie_embeddings:
            raise ValueError(f"a head of {self.head_outputs} logit(s) per position cannot be tied to the token "
                             f"embeddings; set tie_embeddings false or head_outputs 0")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            rate = getattr(self, name)
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")

    def check_length(self, length: int, what: str = "sequence"):
        if length > self.max_seq_len:
            raise ValueError(f"{what} length {length} is longer than max_seq_len {self.max_seq_len}; "
                             f"shorten the sequence or raise model.max_seq_len")

    # ---- compute -------------------------------------------------------------------------------------------
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

        def attended(n_layers, length):  # sum over the layers of the keys each query attends to
            return sum(self.attended_length(i, length) for i in range(n_layers))

        head = self.d_model * self.head_width + (self.d_model ** 2 if self.head_transform else 0)
        flops = 6.0 * head * predicted
        if self.arch in ("encoder", "encoder-decoder"):
            flops += enc_tokens * (6 * self.n_layers * self._layer_matmul_params(False)
                                   + 12 * attn_width * attended(self.n_layers, enc_len))
        if self.arch == "decoder":
            flops += dec_tokens * (6 * self.n_layers * self._layer_matmul_params(False)
                                   + 12 * attn_width * attended(self.n_layers, dec_len))
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

    def weight_differences(self, other: "ModelConfig | dict") -> list[str]:
        """The fields in which `other` describes different weights (WEIGHT_NEUTRAL_FIELDS ignored)."""
        mine, theirs = self.to_dict(), other if isinstance(other, dict) else other.to_dict()
        return [k for k in mine if k not in WEIGHT_NEUTRAL_FIELDS and mine[k] != theirs.get(k)]

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model option(s) {', '.join(sorted(unknown))} in saved config; "
                             f"was it written by a newer version?")
        return cls(**values)
