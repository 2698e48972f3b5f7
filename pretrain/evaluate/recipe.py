"""The fixed default recipes of the two modes, like cramming's "GLUE-sane" settings: the same for every model, so a
difference in the scores is a difference of the pretrained weights.

Full fine-tuning: AdamW (decay on weight matrices only), linear warmup over the first warmup_ratio of the steps,
then linear decay to 0, gradients clipped to grad_clip, the classifier's own dropout; scored after the last epoch.
The defaults suit the small models a CPU pretrains (a few million parameters); for base-size models use the
BERT paper's --lr 2e-5 to 5e-5 and --epochs 3.

Linear probe: the backbone frozen in eval mode, its pooled features (the position the classifier head reads)
computed once and standardized with the training split's mean and deviation, then a multinomial logistic
regression fitted by full-batch L-BFGS, its L2 strength chosen on the validation split from `l2_grid`. The fit is
convex and deterministic, so the probe of a pretrained model does not vary with the seed (the random-init
baseline's probe does: its features are drawn from the seed).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FinetuneRecipe:
    epochs: int = 3
    lr: float = 3e-4
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_length: int = 128


@dataclass
class ProbeRecipe:
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    max_iter: int = 100
    batch_size: int = 64  # for computing the features only
    max_length: int = 128
