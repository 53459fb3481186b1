"""Dataset-level and per-image aggregation, and bootstrap confidence intervals over images.

Dataset-level scores come from one matrix summed over all pixels: large images and frequent
classes weigh more. Per-image scores are computed image by image, then averaged: every image
weighs the same. Both are reported side by side because they can disagree a lot.

The intervals resample images with replacement (percentile bootstrap, seeded), re-sum the
resampled images' matrices and recompute the dataset-level score, so they describe how much
`miou` / `mean_dice` would move with a different draw of images of the same kind.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from pixelwise.metrics.confusion import confusion_matrix
from pixelwise.metrics.scores import _div, dice, iou, nanmean, pixel_accuracy, summarize

def _multilabel_iou(m: np.ndarray) -> np.ndarray:
    tp, fp, fn = m[..., 1, 1], m[..., 0, 1], m[..., 1, 0]
    return _div(tp, tp + fp + fn)


def _multilabel_dice(m: np.ndarray) -> np.ndarray:
    tp, fp, fn = m[..., 1, 1], m[..., 0, 1], m[..., 1, 0]
    return _div(2 * tp, 2 * tp + fp + fn)


# statistic -> (multiclass batch (B, C, C) -> (B,), multilabel batch (B, C, 2, 2) -> (B,))
STATISTICS = {
    "miou": (lambda m: nanmean(iou(m)), lambda m: nanmean(_multilabel_iou(m))),
    "mean_dice": (lambda m: nanmean(dice(m)), lambda m: nanmean(_multilabel_dice(m))),
}


def bootstrap_ci(matrices: Tensor | np.ndarray, statistic: str = "miou", n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a dataset-level score from per-image matrices.

    matrices: (n, C, C) multiclass or (n, C, 2, 2) multilabel. Returns (low, high); (nan, nan)
    with no images.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; accepted: {sorted(STATISTICS)}")
    mats = matrices.cpu().numpy() if isinstance(matrices, Tensor) else np.asarray(matrices)
    fn = STATISTICS[statistic][1 if mats.ndim == 4 else 0]
    n = mats.shape[0]
    if n == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    flat = mats.reshape(n, -1).astype(np.float64)
    stats = np.empty(n_resamples)
    chunk = 200  # (chunk, n) weights keep memory small for large sets
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)  # draws per image
        resampled = (weights @ flat).reshape(b, *mats.shape[1:])
        stats[start:start + b] = fn(resampled)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(low), float(high))


class PerImageScores:
    """Keeps one confusion matrix per image: per-image scores and bootstrap intervals."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.names: list[str] = []
        self._matrices: list[Tensor] = []

    def add(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray, name: str | None = None) -> Tensor:
        """Score one image (label maps of the same shape); returns its (C, C) matrix."""
        m = confusion_matrix(pred, target, self.num_classes, self.ignore_index).cpu()
        self._matrices.append(m)
        self.names.append(name if name is not None else str(len(self.names)))
        return m

    def add_batch(self, preds: Tensor, targets: Tensor, names: Iterable[str] | None = None) -> None:
        """Score each image of a (N, H, W) batch separately."""
        names = list(names) if names is not None else [None] * len(preds)
        for p, t, name in zip(preds, targets, names):
            self.add(p, t, name)

    def __len__(self) -> int:
        return len(self._matrices)

    @property
    def matrices(self) -> Tensor:
        """(n_images, C, C) int64."""
        if not self._matrices:
            return torch.zeros(0, self.num_classes, self.num_classes, dtype=torch.int64)
        return torch.stack(self._matrices)

    def total(self) -> Tensor:
        """The dataset-level matrix: the sum over images."""
        return self.matrices.sum(dim=0)

    def miou_values(self) -> np.ndarray:
        """mIoU of each image (NaN for an image whose pixels are all ignored)."""
        return nanmean(iou(self.matrices))

    def mean_dice_values(self) -> np.ndarray:
        return nanmean(dice(self.matrices))

    def pixel_accuracy_values(self) -> np.ndarray:
        return pixel_accuracy(self.matrices)

    def bootstrap_ci(self, statistic: str = "miou", n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float]:
        return bootstrap_ci(self.matrices, statistic, n_resamples, confidence, seed)

    def per_image(self) -> list[dict[str, Any]]:
        """One row per image: name, miou, mean_dice, pixel_accuracy."""
        rows = zip(self.names, self.miou_values(), self.mean_dice_values(), self.pixel_accuracy_values())
        return [{"name": n, "miou": float(a), "mean_dice": float(d), "pixel_accuracy": float(p)}
                for n, a, d, p in rows]

    def summary(self, class_names: list[str] | None = None, n_resamples: int = 1000, seed: int = 0) -> dict:
        """`summarize` of the total, plus per-image means, intervals and the per-image rows."""
        result = summarize(self.total(), class_names)
        result["per_image_miou"] = float(nanmean(self.miou_values())) if len(self) else math.nan
        result["per_image_mean_dice"] = float(nanmean(self.mean_dice_values())) if len(self) else math.nan
        result["miou_ci"] = list(self.bootstrap_ci("miou", n_resamples, seed=seed))
        result["mean_dice_ci"] = list(self.bootstrap_ci("mean_dice", n_resamples, seed=seed))
        result["num_images"] = len(self)
        result["per_image"] = self.per_image()
        return result


def evaluate_label_maps(preds: Iterable[Tensor | np.ndarray], targets: Iterable[Tensor | np.ndarray],
                        num_classes: int, ignore_index: int | None = 255, class_names: list[str] | None = None,
                        names: Iterable[str] | None = None, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Score pairs of label maps (one image each): the result dict of docs/architecture.md."""
    scores = PerImageScores(num_classes, ignore_index)
    names = list(names) if names is not None else None
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        scores.add(p, t, None if names is None else names[i])
    return scores.summary(class_names, n_resamples=n_resamples, seed=seed)


def jsonable(obj: Any) -> Any:
    """Replace float NaN/inf with None (JSON null) and numpy scalars with Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    return obj
