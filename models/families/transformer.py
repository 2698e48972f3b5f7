""""Attention Is All You Need" (Vaswani et al.): post-norm encoder-decoder, sinusoidal positions, ReLU, embeddings
scaled by sqrt(d_model), tied embeddings, fairseq's initialization. transformers has no class for it, so it trains
and evaluates here but does not export."""
import torch.nn as nn

from ..family import Family, register_family
from ..init import zero_padding_row

PRESET = dict(arch="encoder-decoder", vocab_size=37000, d_model=512, n_layers=6, n_heads=8, d_ff=2048,
              position="sinusoidal", norm="layernorm", norm_eps=1e-6, norm_placement="post", activation="relu",
              scale_embeddings=True, tie_embeddings=True, init="transformer", pad_token_id=0, bos_token_id=1,
              eos_token_id=2, decoder_start_token_id=1)


def init(model, cfg) -> None:
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
    zero_padding_row(model, cfg)


register_family(Family(name="transformer", title="Transformer", preset=PRESET, init=init))
