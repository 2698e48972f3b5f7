"""An encoder-decoder judged by its encoder: a linear head on the mean of the encoder's final states.

    model = encoder_classifier(backbone, num_labels, pretrained=True, seed=0)
    model(input_ids, attention_mask).logits                 # [B, num_labels]
    model.features(input_ids, attention_mask)               # [B, d_model]: what the head reads

transformers' own classifiers for BART and T5 (`BartForSequenceClassification`, `T5ForSequenceClassification`)
feed the text to the encoder *and* the decoder and pool the decoder's state at the final </s>. A span-corruption
or UL2 decoder never read the text during pretraining (it saw sentinels and the spans they hide), so that head
judges a part of the model its objective never trained to represent text. This classifier reads the encoder only
(`AutoModel`'s `get_encoder()`: `T5Stack` / `BartEncoder`; the decoder is dropped), mean-pooled over the real
tokens, as sentence-T5 (Ni et al. 2021) found best for T5's encoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError


@dataclass
class Output:
    logits: torch.Tensor


class EncoderPooledClassifier(nn.Module):
    """transformers' encoder of an encoder-decoder + dropout + a linear head on its mean-pooled final states."""

    def __init__(self, encoder: nn.Module, d_model: int, num_labels: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_labels)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean of the encoder's last hidden states over the real (unpadded) tokens."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Output:
        return Output(self.classifier(self.dropout(self.features(input_ids, attention_mask))))


def encoder_classifier(backbone, num_labels: int, pretrained: bool = True, seed: int = 0) -> EncoderPooledClassifier:
    """The encoder of the exported model (pretrained) or of a fresh one drawn from `seed` (the random-init
    baseline), with a new head drawn from `seed`; fp32, train mode. (Called by classifier(pooling="encoder"),
    which keeps transformers quiet about the decoder weights left unused.)"""
    from transformers import AutoConfig, AutoModel

    if backbone.arch != "encoder-decoder":
        raise UserError(f"encoder pooling applies to encoder-decoders; {backbone.model_type} is a {backbone.arch}")
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(str(backbone.folder))
    model = AutoModel.from_pretrained(str(backbone.folder), dtype=torch.float32) if pretrained else \
        AutoModel.from_config(config, dtype=torch.float32)
    d_model = getattr(config, "d_model", None) or config.hidden_size
    dropout = getattr(config, "classifier_dropout", 0.0) or 0.0  # as transformers' own classification heads
    head = EncoderPooledClassifier(model.get_encoder(), d_model, num_labels, float(dropout))
    torch.manual_seed(seed)
    nn.init.normal_(head.classifier.weight, std=0.02)
    nn.init.zeros_(head.classifier.bias)
    head.train()
    return head
