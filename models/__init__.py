"""The shared Transformer backbone: encoder-only, decoder-only or encoder-decoder from one block type."""
