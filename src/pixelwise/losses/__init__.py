"""Segmentation losses: pure functions (`functional`), thin modules, and `build_loss`.

Losses take raw logits and the task's target form, honour `ignore_index`, and compute their
reductions in float32.
"""

from pixelwise.losses.build import accepted_names, build_loss
from pixelwise.losses.functional import (
    binary_cross_entropy,
    cross_entropy,
    dice_loss,
    focal_loss,
    jaccard_loss,
    soft_counts,
    tversky_loss,
)
from pixelwise.losses.modules import LOSS_FUNCTIONS, SegmentationLoss, WeightedSum
from pixelwise.losses.weights import class_weights_from_counts

__all__ = [
    "build_loss", "accepted_names", "class_weights_from_counts", "SegmentationLoss", "WeightedSum",
    "LOSS_FUNCTIONS", "cross_entropy", "binary_cross_entropy", "dice_loss", "jaccard_loss",
    "focal_loss", "tversky_loss", "soft_counts",
]
