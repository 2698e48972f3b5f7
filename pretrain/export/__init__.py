"""Export: a run to transformers' own classes (and the Hub) with a model card, and a transformers model back to a
run for continued pretraining."""
