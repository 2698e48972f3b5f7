"""Looking at a model: samples (fill-mask, continuation, reconstruction) and attention pictures."""
