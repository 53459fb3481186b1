"""Scores computed from a confusion matrix, as pure functions.

Each function takes a multiclass matrix `(..., C, C)` (rows = target, columns = prediction;
leading axes are batches of matrices, e.g. one per image) and returns float64 numpy arrays.
`summarize` also accepts a multilabel stack `(C, 2, 2)` (one binary matrix per class).

Absent-class rule (docs/metrics.md), the same everywhere: a class with no target and no
predicted pixels gets NaN for that class and is left out of every mean; a class absent from
the target but predicted gets IoU 0 and Dice 0. Accuracy (recall) is NaN for a class with no
target pixels, precision NaN for a class never predicted; both are then left out of means.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _np(matrix: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(matrix, Tensor):
        matrix = matrix.detach().cpu().numpy()
    return np.asarray(matrix, dtype=np.float64)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den == 0, without warnings."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over `axis` ignoring NaN; NaN (not a warning) when every value is NaN."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    return _div(np.where(ok, x, 0.0).sum(axis=axis), ok.sum(axis=axis).astype(np.float64))


def per_class_counts(matrix: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn) per class, each (..., C), from a (..., C, C) matrix."""
    m = _np(matrix)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    support = m.sum(axis=-1)  # target pixels per class
    predicted = m.sum(axis=-2)
    return tp, predicted - tp, support - tp


def _multilabel_counts(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # [c, target, pred]: tp = [1, 1], fp = [0, 1], fn = [1, 0]
    return m[..., 1, 1], m[..., 0, 1], m[..., 1, 0]


def iou(matrix: Tensor | np.ndarray) -> np.ndarray:
    """Per-class intersection over union tp / (tp + fp + fn), (..., C)."""
    tp, fp, fn = per_class_counts(matrix)
    return _div(tp, tp + fp + fn)


def dice(matrix: Tensor | np.ndarray) -> np.ndarray:
    """Per-class Dice / F1 2tp / (2tp + fp + fn), (..., C)."""
    tp, fp, fn = per_class_counts(matrix)
    return _div(2 * tp, 2 * tp + fp + fn)


def class_accuracy(matrix: Tensor | np.ndarray) -> np.ndarray:
    """Per-class accuracy = recall tp / (tp + fn), (..., C); NaN for a class with no target pixels."""
    tp, _, fn = per_class_counts(matrix)
    return _div(tp, tp + fn)


def precision(matrix: Tensor | np.ndarray) -> np.ndarray:
    """Per-class precision tp / (tp + fp), (..., C); NaN for a class never predicted."""
    tp, fp, _ = per_class_counts(matrix)
    return _div(tp, tp + fp)


def pixel_accuracy(matrix: Tensor | np.ndarray) -> np.ndarray:
    """Fraction of counted pixels whose prediction is right, (...)."""
    m = _np(matrix)
    return _div(np.trace(m, axis1=-2, axis2=-1), m.sum(axis=(-2, -1)))


def mean_iou(matrix: Tensor | np.ndarray) -> np.ndarray:
    return nanmean(iou(matrix))


def mean_dice(matrix: Tensor | np.ndarray) -> np.ndarray:
    return nanmean(dice(matrix))


def mean_accuracy(matrix: Tensor | np.ndarray) -> np.ndarray:
    return nanmean(class_accuracy(matrix))


def frequency_weighted_iou(matrix: Tensor | np.ndarray) -> np.ndarray:
    """Sum over classes of (target frequency x IoU); classes with no target pixels weigh 0."""
    m = _np(matrix)
    support = m.sum(axis=-1)
    freq = _div(support, support.sum(axis=-1, keepdims=True))
    weighted = np.where(support > 0, freq * np.nan_to_num(iou(m)), 0.0).sum(axis=-1)
    return np.where(support.sum(axis=-1) > 0, weighted, np.nan)


def _f(x: np.ndarray | float) -> float:
    return float(x)


def summarize(matrix: Tensor | np.ndarray, class_names: list[str] | None = None) -> dict:
    """All scores of one confusion matrix as a plain dict (NaN stays float NaN).

    Multiclass (C, C): pixel_accuracy, mean_accuracy, miou, fwiou, mean_dice, per_class
    {name: {iou, dice, accuracy, precision, support}}, confusion_matrix, num_classes.
    Multilabel (C, 2, 2): the same per-class scores and means; pixel_accuracy counts every
    (pixel, class) decision, fwiou weighs classes by their positive pixels.
    """
    m = _np(matrix)
    if m.ndim == 3 and m.shape[1:] == (2, 2):
        tp, fp, fn = _multilabel_counts(m)
        support = tp + fn
        total = m.sum(axis=(1, 2))
        pix = _div((tp + m[:, 0, 0]).sum(), total.sum())
    elif m.ndim == 2 and m.shape[0] == m.shape[1]:
        tp, fp, fn = per_class_counts(m)
        support = m.sum(axis=1)
        pix = pixel_accuracy(m)
    else:
        raise ValueError(f"expected a (C, C) or (C, 2, 2) confusion matrix, got shape {m.shape}")
    C = tp.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    if len(names) != C:
        raise ValueError(f"{len(names)} class names for {C} classes")
    ious = _div(tp, tp + fp + fn)
    dices = _div(2 * tp, 2 * tp + fp + fn)
    accs = _div(tp, tp + fn)
    precs = _div(tp, tp + fp)
    freq = _div(support, np.asarray(support.sum()))
    fwiou = np.where(support > 0, freq * np.nan_to_num(ious), 0.0).sum() if support.sum() > 0 else np.nan
    return {
        "pixel_accuracy": _f(pix),
        "mean_accuracy": _f(nanmean(accs)),
        "miou": _f(nanmean(ious)),
        "fwiou": _f(fwiou),
        "mean_dice": _f(nanmean(dices)),
        "per_class": {
            name: {"iou": _f(ious[i]), "dice": _f(dices[i]), "accuracy": _f(accs[i]),
                   "precision": _f(precs[i]), "support": int(support[i])}
            for i, name in enumerate(names)
        },
        "confusion_matrix": m.astype(np.int64).tolist(),
        "num_classes": C,
    }
