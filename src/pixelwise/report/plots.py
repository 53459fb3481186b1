"""Report plots as PNG files, drawn with matplotlib's object API on the Agg canvas.

`matplotlib.figure.Figure` is used directly rather than pyplot: no global figure state, no
GUI backend is ever selected, and plots can be drawn from any thread (e.g. at the end of
training while a server runs).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pixelwise import atomic

DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: PNG output, no display needed
    fmt = path.suffix.lstrip(".").lower() or "png"
    return atomic.write_with(path, lambda handle: fig.savefig(handle, format=fmt, dpi=DPI, bbox_inches="tight"))


def _series(history: list[dict[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    epochs = np.array([row["epoch"] for row in history if key in row], dtype=float)
    values = np.array([row[key] for row in history if key in row], dtype=float)
    return epochs, values


def training_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Loss, mIoU (and other val_* scores in 0..1) and learning rate per epoch, side by side."""
    fig = Figure(figsize=(13, 3.6))
    ax_loss, ax_score, ax_lr = fig.subplots(1, 3)
    # Markers as well as lines: a one-epoch run would otherwise draw nothing.
    style = {"marker": "o", "markersize": 3}
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        x, y = _series(history, key)
        if np.isfinite(y).any():
            ax_loss.plot(x, y, label=label, **style)
    ax_loss.set(title="Loss", xlabel="epoch")
    # Ordered union over epochs: a metric may first appear after epoch 1.
    score_keys = list(dict.fromkeys(k for row in history for k in row if k.startswith("val_") and k != "val_loss"))
    for key in score_keys:
        x, y = _series(history, key)
        finite = y[np.isfinite(y)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:  # only scores, not counts
            ax_score.plot(x, y, label=key.removeprefix("val_"), **style)
    ax_score.set(title="Validation scores", xlabel="epoch", ylim=(0, 1))
    x, y = _series(history, "lr")
    if np.isfinite(y).any():
        ax_lr.plot(x, y, color="tab:purple", **style)
        if np.nanmin(y) > 0 and np.nanmax(y) / np.nanmin(y) > 50:
            ax_lr.set_yscale("log")
    ax_lr.set(title="Learning rate", xlabel="epoch")
    for ax in (ax_loss, ax_score, ax_lr):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if not ax.lines:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.tight_layout()
    return _save(fig, path)


def per_class_bars(
    names: Sequence[str], colors: Sequence[tuple[int, int, int]], per_class: dict[str, dict[str, Any]], path: Path
) -> Path:
    """IoU (solid, class colour) and Dice (hatched) per class; NaN classes are marked n/a."""
    fig = Figure(figsize=(max(6.0, 0.7 * len(names) + 2), 3.8))
    ax = fig.subplots()
    x = np.arange(len(names))
    iou = np.array([_metric(per_class, n, "iou") for n in names])
    dice = np.array([_metric(per_class, n, "dice") for n in names])
    face = [tuple(c / 255 for c in color) for color in colors]
    ax.bar(x - 0.2, np.nan_to_num(iou), width=0.4, color=face, edgecolor="black", linewidth=0.6, label="IoU")
    ax.bar(x + 0.2, np.nan_to_num(dice), width=0.4, color=face, edgecolor="black", linewidth=0.6,
           hatch="//", alpha=0.7, label="Dice")
    for i in np.flatnonzero(np.isnan(iou)):
        ax.text(x[i], 0.02, "n/a", ha="center", fontsize=8, color="gray", rotation=90)
    ax.set_xticks(x, list(names), rotation=45, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="score", title="Per-class IoU and Dice")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _metric(per_class: dict[str, dict[str, Any]], name: str, key: str) -> float:
    value = per_class.get(name, {}).get(key)
    return math.nan if value is None else float(value)


def normalized_confusion(matrix: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix (rows = true class); rows without pixels are NaN."""
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1), np.nan)


def confusion_heatmap(matrix: np.ndarray, names: Sequence[str], path: Path) -> Path:
    """Heatmap of the row-normalised confusion matrix, with values written in small matrices."""
    norm = normalized_confusion(matrix)
    size = len(names)
    fig = Figure(figsize=(max(4.5, 0.55 * size + 2.5), max(4.0, 0.55 * size + 2)))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(norm), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's pixels")
    ax.set_xticks(range(size), list(names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(size), list(names), fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="Normalised confusion matrix")
    if size <= 20:
        for i in range(size):
            for j in range(size):
                value = norm[i, j]
                text = "–" if np.isnan(value) else f"{value:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if (not np.isnan(value) and value > 0.6) else "black")
    fig.tight_layout()
    return _save(fig, path)


def per_image_histogram(values: Sequence[float], dataset_miou: float, ci: Sequence[float] | None, path: Path) -> Path:
    """Distribution of per-image mIoU with the dataset-level mIoU and the interval marked."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.subplots()
    if values.size:
        ax.hist(values, bins=min(40, max(10, values.size // 3)), range=(0, 1), color="tab:blue", alpha=0.7,
                label=f"per-image mIoU (n={values.size}, mean {values.mean():.3f})")
    if ci is not None and len(ci) == 2 and all(v is not None and math.isfinite(v) for v in ci):
        ax.axvspan(ci[0], ci[1], color="tab:orange", alpha=0.2, label=f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}]")
    if dataset_miou is not None and math.isfinite(dataset_miou):
        ax.axvline(dataset_miou, color="tab:red", linestyle="--", label=f"dataset mIoU {dataset_miou:.3f}")
    ax.set(xlim=(0, 1), xlabel="mIoU", ylabel="images", title="Per-image mIoU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)
