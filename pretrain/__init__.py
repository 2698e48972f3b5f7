"""The training engine: config, corpus, tokenizer, packing, the Accelerate loop, export and comparison."""
