"""The application, split along the data flow: data/ (corpus, tokenizer, packing), train/ (config, the composition
root, the trainer, checkpoints, the run directory), export/ (transformers, the Hub, model cards), compare/ (the
comparison of objectives and its report), inspect/ (samples, attention pictures), and cli.py on top."""
