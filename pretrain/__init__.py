"""The application, split along the data flow: data/ (corpus, tokenizer, packing), inspect/ (samples, attention
pictures), train/ (config, the composition root, the trainer, checkpoints, the run directory), export/
(transformers, the Hub, model cards), downstream/ (fine-tuning and probing), compare/ (the comparison of objectives
and its report), and cli.py on top. Each may import only those before it (pyproject.toml's import-linter
contracts, checked by tests/test_layering.py)."""
