"""The shared Transformer backbone: encoder-only, decoder-only or encoder-decoder from one block type, and the model
families (models/families/) that reproduce real architectures with it."""
from . import families  # noqa: F401  (registers the built-in families)
from .config import ModelConfig
from .errors import UserError
from .family import Family, family_names, get_family, register_family
from .transformer import Transformer, num_params

__all__ = ["ModelConfig", "Transformer", "num_params", "Family", "register_family", "get_family", "family_names",
           "UserError"]
