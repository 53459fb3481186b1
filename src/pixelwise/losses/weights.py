"""Class weights from pixel counts: inverse frequency, median-frequency balancing and ENet's
inverse log frequency."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pixelwise.errors import ConfigError

METHODS = ("median_frequency", "inverse_frequency", "inverse_log_frequency")
# ENet's constant: it caps the weight of the rarest class near 1/ln(1.02) ~ 50.
ENET_C = 1.02


def class_weights_from_counts(pixel_counts: Tensor | np.ndarray | list, method: str = "median_frequency") -> Tensor:
    """Per-class loss weights (C,) float32 from pixel counts.

    pixel_counts: (C,) pixels per class over the training set, or (n_images, C) per image.
    - inverse_frequency: w_c = total / (C_present * count_c), so balanced data gets 1.
    - median_frequency (SegNet, Badrinarayanan et al.): w_c = median(freq) / freq_c with
      freq_c = pixels of c / pixels of the images where c is present (needs per-image counts;
      with (C,) totals every image is taken to hold every class, freq_c = count_c / total).
    - inverse_log_frequency (ENet, Paszke et al.): w_c = 1 / ln(1.02 + p_c), p_c = count_c / total;
      bounded (1.4 to 50), so rare classes gain without the precision collapse that
      median frequency's 50-100x ratios can cause.
    Classes with no pixels get weight 0: they never occur in a target, so any weight is unused.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown class-weight method {method!r}; accepted: {', '.join(METHODS)}")
    counts = np.asarray(pixel_counts.cpu() if isinstance(pixel_counts, Tensor) else pixel_counts, dtype=np.float64)
    if counts.ndim not in (1, 2) or counts.size == 0 or (counts < 0).any():
        raise ConfigError(f"pixel counts must be non-negative, shape (C,) or (n_images, C); got shape {counts.shape}")
    per_class = counts if counts.ndim == 1 else counts.sum(axis=0)
    present = per_class > 0
    if not present.any():
        raise ConfigError("pixel counts are all zero: no class to weigh")
    weights = np.zeros_like(per_class)
    if method == "inverse_frequency":
        weights[present] = per_class.sum() / (present.sum() * per_class[present])
    elif method == "inverse_log_frequency":
        weights[present] = 1.0 / np.log(ENET_C + per_class[present] / per_class.sum())
    else:
        if counts.ndim == 2:
            image_totals = counts.sum(axis=1, keepdims=True)  # (n, 1)
            denom = ((counts > 0) * image_totals).sum(axis=0)
        else:
            denom = np.full_like(per_class, per_class.sum())
        weights = median_frequency(per_class, denom)
    return torch.tensor(weights, dtype=torch.float32)


def median_frequency(per_class: np.ndarray, pixels_where_present: np.ndarray) -> np.ndarray:
    """SegNet's balancing from (C,) sums: freq_c = pixels of c / labelled pixels of the images
    where c appears; w_c = median(freq) / freq_c. Classes never seen get 0.
    `pixelwise data stats` and training both call this, so they print and use the same weights."""
    per_class = np.asarray(per_class, dtype=np.float64)
    pixels_where_present = np.asarray(pixels_where_present, dtype=np.float64)
    seen = (per_class > 0) & (pixels_where_present > 0)
    freq = np.zeros_like(per_class)
    freq[seen] = per_class[seen] / pixels_where_present[seen]
    weights = np.zeros_like(per_class)
    if seen.any():
        weights[seen] = np.median(freq[seen]) / freq[seen]
    return weights
