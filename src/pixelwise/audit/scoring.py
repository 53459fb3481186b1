"""Likely label errors from out-of-sample probabilities, as in confident learning
(Northcutt et al. 2021), per pixel, per region and per image. Pure numpy and OpenCV.

1. Per-class thresholds: t_j = mean predicted probability of class j over the pixels
   labelled j (the model's typical self-confidence on that class; a rare, hard class gets a
   lower bar than an easy one).
2. A labelled pixel *confidently disagrees* when some class clears its threshold
   (p_j >= t_j) and the most probable such class is not the given label. Its suggested class
   is that class, its margin p_suggested - p_label (in (−1, 1]; large = the model is sure).
3. Regions are the 8-connected components of those pixels; a region scores its pixel count
   times its mean margin. An image scores the sum of its flagged margins over its labelled
   pixels: the share of the image that looks mislabelled, weighted by how sure the model is.

Binary tasks use the two-class distribution (1 - p, p). Multilabel data is not audited yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def two_class(probs: np.ndarray) -> np.ndarray:
    """Binary foreground probability (1, H, W) -> (2, H, W): background, foreground."""
    return np.concatenate([1 - probs, probs], axis=0)


class ThresholdAccumulator:
    """Sums of p_j over pixels labelled j, image by image: thresholds() = their means."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.sums = np.zeros(num_classes, dtype=np.float64)
        self.counts = np.zeros(num_classes, dtype=np.int64)

    def add(self, probs: np.ndarray, labels: np.ndarray) -> None:
        """probs (K, H, W), labels (H, W) class ids or ignore_index."""
        keep = labels != self.ignore_index
        y = labels[keep].astype(np.int64)
        p_own = np.take_along_axis(probs[:, keep], y[None, :], axis=0)[0]  # p of the given label
        self.sums += np.bincount(y, weights=p_own, minlength=self.num_classes)[: self.num_classes]
        self.counts += np.bincount(y, minlength=self.num_classes)[: self.num_classes]

    def thresholds(self) -> np.ndarray:
        """(K,) float64; a class never labelled gets +inf (it cannot be suggested with confidence)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.inf)


@dataclass
class Disagreement:
    flagged: np.ndarray     # (H, W) bool: labelled pixels that confidently disagree
    suggested: np.ndarray   # (H, W) int64: the confident class (valid where flagged)
    margin: np.ndarray      # (H, W) float64: p_suggested - p_label where flagged, else 0
    labelled: int           # pixels with a label (not ignore_index)


def confident_disagreement(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray,
                           ignore_index: int = 255) -> Disagreement:
    """Per-pixel confident disagreement of probs (K, H, W) with labels (H, W) (rules above)."""
    keep = labels != ignore_index
    above = probs >= thresholds[:, None, None]
    candidate = np.where(above, probs, -np.inf)
    suggested = candidate.argmax(axis=0)
    any_above = above.any(axis=0)
    y = np.where(keep, labels, 0).astype(np.int64)
    flagged = keep & any_above & (suggested != y)
    p_label = np.take_along_axis(probs, y[None], axis=0)[0]
    p_suggested = np.take_along_axis(probs, suggested[None], axis=0)[0]
    margin = np.where(flagged, p_suggested - p_label, 0.0)
    return Disagreement(flagged, suggested, margin.astype(np.float64), int(keep.sum()))


@dataclass
class Region:
    label: int              # the given label held by most of its pixels
    suggested: int          # the class the model suggests for most of its pixels
    pixels: int
    mean_margin: float
    bbox: tuple[int, int, int, int]  # x, y, width, height
    score: float            # pixels * mean_margin


def regions(d: Disagreement, labels: np.ndarray, min_pixels: int = 1) -> list[Region]:
    """8-connected components of the flagged pixels, largest score first."""
    import cv2

    count, components, stats, _ = cv2.connectedComponentsWithStats(d.flagged.astype(np.uint8), connectivity=8)
    found = []
    for c in range(1, count):
        pixels = int(stats[c, cv2.CC_STAT_AREA])
        if pixels < min_pixels:
            continue
        inside = components == c
        margin = float(d.margin[inside].mean())
        found.append(Region(
            label=int(np.bincount(labels[inside].astype(np.int64)).argmax()),
            suggested=int(np.bincount(d.suggested[inside]).argmax()),
            pixels=pixels, mean_margin=margin,
            bbox=tuple(int(v) for v in stats[c, :4]),  # type: ignore[arg-type]
            score=pixels * margin,
        ))
    return sorted(found, key=lambda r: -r.score)


def image_score(d: Disagreement) -> float:
    """Sum of flagged margins over the labelled pixels, in [0, 1]; 0 for an image without labels."""
    return float(d.margin.sum() / d.labelled) if d.labelled else 0.0
