"""Pretraining objectives: each turns packed token blocks into a batch and a loss."""
