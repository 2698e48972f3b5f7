"""Downstream evaluation: fine-tune and probe pretrained models on labelled classification tasks."""
