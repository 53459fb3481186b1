"""Segmentation metrics from one integer confusion matrix (see docs/metrics.md).

`ConfusionMatrix` / `MultilabelConfusion` accumulate counts batch by batch (and across
processes); pure functions in `scores` turn a matrix into scores; `aggregate` adds per-image
scores, bootstrap intervals and `evaluate_label_maps`.
"""

from pixelwise.metrics.aggregate import PerImageScores, bootstrap_ci, evaluate_label_maps, jsonable
from pixelwise.metrics.confusion import (
    ConfusionMatrix,
    MultilabelConfusion,
    confusion_matrix,
    multilabel_confusion,
)
from pixelwise.metrics.scores import (
    class_accuracy,
    dice,
    frequency_weighted_iou,
    iou,
    mean_accuracy,
    mean_dice,
    mean_iou,
    nanmean,
    pixel_accuracy,
    precision,
    summarize,
)

__all__ = [
    "ConfusionMatrix", "MultilabelConfusion", "confusion_matrix", "multilabel_confusion",
    "summarize", "iou", "dice", "class_accuracy", "precision", "pixel_accuracy", "mean_iou",
    "mean_dice", "mean_accuracy", "frequency_weighted_iou", "nanmean",
    "PerImageScores", "bootstrap_ci", "evaluate_label_maps", "jsonable",
]
