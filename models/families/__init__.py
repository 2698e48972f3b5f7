"""The built-in model families, one file each; importing this package registers them (models/family.py) in the
order presets are listed in messages and tried when matching a config to a transformers class."""
from . import (bert, gpt2, llama, bart, t5, electra, modernbert, modernbert_decoder,  # noqa: F401,I001
               transformer)  # (registration order)
