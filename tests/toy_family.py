"""A new model family in one file, registered when imported: a small "modern" encoder (RMSNorm pre-norm, rotary
positions, SwiGLU, no biases) with an initialization of its own and MLM as its objective. transformers has no class
for it, so the file names none: it trains, and export refuses it."""
import torch.nn as nn

from models.family import Family, register_family

PRESET = dict(arch="encoder", position="rotary", norm="rmsnorm", norm_eps=1e-6, norm_placement="pre",
              activation="swiglu", bias=False, dropout=0.0, tie_embeddings=True, init="toy-encoder",
              pad_token_id=0)


def init(model, cfg) -> None:
    """Small uniform weights, unit norms: visibly not any built-in family's scheme."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.uniform_(module.weight, -0.01, 0.01)
        elif isinstance(module, nn.RMSNorm):
            nn.init.ones_(module.weight)


FAMILY = register_family(Family(name="toy-encoder", title="Toy encoder", preset=PRESET, init=init,
                                default_objective="mlm"))
