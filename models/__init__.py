"""The shared Transformer backbone: encoder-only, decoder-only or encoder-decoder from one block type."""
from .config import PRESETS, ModelConfig
from .transformer import Transformer

__all__ = ["ModelConfig", "Transformer", "PRESETS"]
