"""Data: the corpus (local files, the Hub, the built-in corpus), tokenizer training and loading, packing into
blocks (cached), and the order in which the trainer reads them."""
