"""Per-pixel uncertainty from predicted probabilities: pure functions, one formula per task.

All maps are in [0, 1] (0 = certain) so one colour scale and one PNG16 scaling fit every task:

- entropy
    multiclass: softmax entropy H(p) = -sum_c p_c ln p_c, divided by ln C (its maximum).
    binary / multilabel: Bernoulli entropy of each channel in bits, -p log2 p - (1-p) log2 (1-p)
    (1 at p = 0.5); multilabel channels are averaged for the map (`reduce="mean"`), or kept
    per class (`reduce="none"`, shape (K, H, W)).
- margin
    multiclass: 1 - (p_top1 - p_top2). binary / multilabel: 1 - |2p - 1| per channel (the
    margin between p and 1 - p), averaged or per class as above.
- tta-variance
    the variance of the probabilities over test-time views, averaged over channels and
    scaled by 4 (a probability's variance is at most 1/4). Needs the per-view probabilities.

Images score as the mean of their map over the pixels (a per-image column in predict's CSV).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from pixelwise.errors import ConfigError

METHODS = ("entropy", "margin", "tta-variance")
Reduce = Literal["mean", "none"]
_EPS = 1e-12


def _xlogx(p: Tensor) -> Tensor:
    return torch.where(p > 0, p * torch.log(p.clamp_min(_EPS)), torch.zeros_like(p))


def softmax_entropy(probs: Tensor, dim: int = 0) -> Tensor:
    """Normalised entropy of softmax probabilities along `dim` (the class axis), in [0, 1]."""
    classes = probs.shape[dim]
    return (-_xlogx(probs).sum(dim=dim) / math.log(classes)).clamp(0, 1)


def bernoulli_entropy(p: Tensor) -> Tensor:
    """Entropy in bits of each sigmoid probability (same shape), in [0, 1]."""
    return ((-_xlogx(p) - _xlogx(1 - p)) / math.log(2)).clamp(0, 1)


def softmax_margin(probs: Tensor, dim: int = 0) -> Tensor:
    """1 - (top-1 minus top-2 probability) along the class axis, in [0, 1]."""
    top2 = probs.topk(2, dim=dim).values
    first, second = top2.select(dim, 0), top2.select(dim, 1)
    return (1 - (first - second)).clamp(0, 1)


def bernoulli_margin(p: Tensor) -> Tensor:
    """1 - |p - (1 - p)| per sigmoid probability, in [0, 1]."""
    return (1 - (2 * p - 1).abs()).clamp(0, 1)


def uncertainty_map(probs: Tensor, kind: str, method: str = "entropy", reduce: Reduce = "mean") -> Tensor:
    """Uncertainty of one image's probabilities (K, H, W) -> (H, W) (or (K, H, W) per class).

    kind: the task kind (binary probs have K = 1, the foreground probability).
    reduce="none" keeps one map per channel for binary/multilabel (a multiclass map has no
    per-class form and is always (H, W)).
    """
    if method not in ("entropy", "margin"):
        raise ConfigError(f"unknown uncertainty {method!r} for a single prediction; accepted: entropy, margin "
                          "(tta-variance needs the views: tta_variance)")
    probs = probs.float()
    if kind == "multiclass":
        return softmax_entropy(probs, 0) if method == "entropy" else softmax_margin(probs, 0)
    per_channel = bernoulli_entropy(probs) if method == "entropy" else bernoulli_margin(probs)  # (K, H, W)
    return per_channel if reduce == "none" else per_channel.mean(dim=0)


def tta_variance(view_probs: Tensor) -> Tensor:
    """Views' probabilities (V, K, H, W) -> 4 x variance over views, mean over channels, (H, W) in [0, 1].

    The population variance (divide by V): with one view it is 0, not undefined.
    """
    if view_probs.ndim != 4:
        raise ValueError(f"expected (views, K, H, W), got {tuple(view_probs.shape)}")
    return (4 * view_probs.float().var(dim=0, unbiased=False).mean(dim=0)).clamp(0, 1)


def image_score(umap: Tensor) -> float:
    """Per-image uncertainty: the mean of its map."""
    return float(umap.float().mean())


def to_png16(umap: Tensor) -> "numpy.ndarray":  # noqa: F821 - numpy imported lazily
    """[0, 1] map -> uint16 image (0..65535), the scaling documented for --uncertainty-format png16."""
    import numpy as np

    return np.rint(umap.float().clamp(0, 1).cpu().numpy() * 65535).astype(np.uint16)


def heat_overlay(image: "numpy.ndarray", umap: "numpy.ndarray", alpha: float = 0.6) -> "numpy.ndarray":  # noqa: F821
    """The image in gray with the map blended on top in a black-red-yellow-white heat scale
    (uint8 H x W x 3): uncertain regions glow, certain ones keep the picture visible."""
    import numpy as np

    img = image[..., None] if image.ndim == 2 else image
    img = img.astype(np.float32) / (65535.0 if image.dtype == np.uint16 else 255.0)
    gray = img[..., :3].mean(axis=2) if img.shape[2] >= 3 else img[..., 0]
    u = np.clip(np.asarray(umap, dtype=np.float32), 0, 1)
    heat = np.stack([np.clip(3 * u, 0, 1), np.clip(3 * u - 1, 0, 1), np.clip(3 * u - 2, 0, 1)], axis=2)
    weight = alpha * u[..., None]  # blend in proportion to the uncertainty
    out = (1 - weight) * gray[..., None] + weight * heat
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def check_uncertainty(predictor: "Predictor", method: str) -> None:  # noqa: F821
    """ConfigError when `predictor` cannot give `method` (unknown name, labels-only ONNX, too few TTA views)."""
    if method not in METHODS:
        raise ConfigError(f"unknown uncertainty {method!r}; accepted: {', '.join(METHODS)}")
    if predictor.decodes:
        raise ConfigError(f"{predictor.source}: this ONNX graph outputs labels only (exported with decoding); "
                          "uncertainty needs probabilities: export without --with-decoding")
    if method == "tta-variance" and len(predictor.tta) < 2:
        raise ConfigError("tta-variance needs test-time augmentation with at least two views, e.g. --tta hflip,vflip")


def predict_with_uncertainty(predictor: "Predictor", images: list, method: str = "entropy",  # noqa: F821
                             reduce: Reduce = "mean") -> list[tuple["Prediction", Tensor]]:  # noqa: F821
    """Predict `images` with a Predictor and return (Prediction, uncertainty map) per image.

    entropy / margin: from the Predictor's probabilities (after its TTA and temperature).
    tta-variance: one pass per TTA view (the Predictor must have at least two views); the
    labels then come from the mean of the views' probabilities, as TTA's own labels do.
    """
    import dataclasses

    import numpy as np

    from pixelwise.inference.predictor import Prediction

    check_uncertainty(predictor, method)
    kind = predictor.task.kind
    if method != "tta-variance":
        preds = predictor.predict(list(images), return_probabilities=True)
        return [(p, uncertainty_map(torch.from_numpy(p.probabilities), kind, method, reduce)) for p in preds]
    per_view = []
    for view in predictor.tta:
        single = dataclasses.replace(predictor, tta=[view])
        per_view.append([p.probabilities for p in single.predict(list(images), return_probabilities=True)])
    results = []
    for i in range(len(images)):
        stack = torch.from_numpy(np.stack([views[i] for views in per_view]))  # (V, K, H, W)
        mean = stack.mean(dim=0)
        labels = predictor.task.decode_probabilities(mean[None])[0].to(torch.uint8).numpy()
        results.append((Prediction(labels=labels, probabilities=mean.numpy()), tta_variance(stack)))
    return results
