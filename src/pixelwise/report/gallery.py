"""The best and worst validation images: image | ground truth | prediction | error map.

Inputs are written by `pixelwise evaluate` (see docs/report_and_serve.md):

    RUN_DIR/eval/gallery/<name>_image.png    the input image as read (RGB or gray, 8 or 16 bit)
    RUN_DIR/eval/gallery/<name>_target.png   uint8 class ids, ignore_index (255) = not labelled
    RUN_DIR/eval/gallery/<name>_pred.png     uint8 class ids predicted by the best checkpoint

`<name>` is the sample name used in eval/per_image.csv (ranked there by mIoU), with "/"
and "\\" replaced by "__". When evaluate wrote no gallery, `recompute_gallery` predicts the
best and worst images again with checkpoints/best.pt on the data and split recorded in
eval/metrics.json (a handful of forward passes) and writes the same files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from pixelwise import atomic
from pixelwise.data.masks import read_label_map
from pixelwise.errors import PixelwiseError
from pixelwise.visualize import colorize, error_map

PANEL_WIDTH = 256  # px per panel; the report shows overviews, not full-resolution images


@dataclass
class GalleryEntry:
    """One gallery row: a composed strip of four panels and where it was written."""

    name: str
    group: str  # "best" or "worst"
    miou: float
    pixel_accuracy: float
    error_share: float  # wrong / labelled pixels
    strip_path: Path


def file_key(name: str) -> str:
    """Sample name -> the file-name stem used in eval/gallery/ (as evaluate writes predictions)."""
    return name.replace("/", "__").replace("\\", "__")


def available_names(gallery_dir: Path) -> list[str]:
    """Sample names with all three gallery files present, sorted."""
    if not gallery_dir.is_dir():
        return []
    names = []
    for image_path in sorted(gallery_dir.glob("*_image.png")):
        name = image_path.name[: -len("_image.png")]
        if (gallery_dir / f"{name}_target.png").is_file() and (gallery_dir / f"{name}_pred.png").is_file():
            names.append(name)
    return names


def select(per_image: Sequence[dict], names: Sequence[str], k: int = 4) -> list[tuple[str, str, dict]]:
    """(group, name, scores) for the k best and k worst images that have gallery files."""
    have = set(names)
    scored = [row for row in per_image if file_key(row["name"]) in have and math.isfinite(row["miou"])]
    scored.sort(key=lambda row: row["miou"], reverse=True)
    best = scored[:k]
    worst = [row for row in reversed(scored) if row not in best][:k]
    chosen = [("best", file_key(row["name"]), row) for row in best]
    chosen += [("worst", file_key(row["name"]), row) for row in worst]
    if not per_image:  # no ranking available: show what exists, unranked
        chosen = [("unranked", name, {"name": name, "miou": math.nan, "pixel_accuracy": math.nan}) for name in names[: 2 * k]]
    return chosen


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        array = np.asarray(img)
    if array.dtype == np.uint16 or array.dtype == np.int32:
        # 16-bit images: stretch to the image's own range for display only.
        low, high = float(array.min()), float(array.max())
        array = ((array - low) / max(high - low, 1) * 255).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=2)
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8)


def _resize(array: np.ndarray, width: int, nearest: bool) -> np.ndarray:
    """Scale to about `width` px wide: down to fit, or up by a whole factor so pixels stay crisp."""
    h, w = array.shape[:2]
    if w > width:
        size = (width, max(1, round(h * width / w)))
    elif 2 * w <= width:
        factor = width // w
        size = (w * factor, h * factor)
        nearest = True
    else:
        return array
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize(size, method))


def compose_strip(
    image: np.ndarray, target: np.ndarray, pred: np.ndarray,
    colors: Sequence[tuple[int, int, int]], ignore_index: int = 255, panel_width: int = PANEL_WIDTH,
) -> tuple[np.ndarray, float]:
    """Four panels side by side (H', 4*W' + gaps, 3) and the share of wrong labelled pixels."""
    if image.shape[:2] != target.shape or target.shape != pred.shape:
        raise ValueError(f"sizes differ: image {image.shape[:2]}, target {target.shape}, prediction {pred.shape}")
    labelled = target != ignore_index
    error_share = float(((pred != target) & labelled).sum() / max(int(labelled.sum()), 1))
    panels = [
        _resize(image, panel_width, nearest=False),
        _resize(colorize(target, colors), panel_width, nearest=True),
        _resize(colorize(pred, colors), panel_width, nearest=True),
        _resize(error_map(pred, target, ignore_index), panel_width, nearest=True),
    ]
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row: list[np.ndarray] = []
    for panel in panels:
        row += [panel, gap]
    return np.concatenate(row[:-1], axis=1), error_share


def build_gallery(
    run_dir: Path, per_image: Sequence[dict], colors: Sequence[tuple[int, int, int]],
    out_dir: Path, ignore_index: int = 255, k: int = 4,
) -> tuple[list[GalleryEntry], list[str]]:
    """Compose and write the gallery strips; returns the entries and notes on what was skipped."""
    gallery_dir = run_dir / "eval" / "gallery"
    names = available_names(gallery_dir)
    notes: list[str] = []
    if not names:
        notes.append("gallery: no images in eval/gallery/ (written by `pixelwise evaluate`)")
        return [], notes
    entries = []
    for group, name, scores in select(per_image, names, k):
        try:
            image = _read_rgb(gallery_dir / f"{name}_image.png")
            target = read_label_map(gallery_dir / f"{name}_target.png")
            pred = read_label_map(gallery_dir / f"{name}_pred.png")
            strip, error_share = compose_strip(image, target, pred, colors, ignore_index)
        except (OSError, ValueError, PixelwiseError) as exc:
            notes.append(f"gallery: {name} skipped ({exc})")
            continue
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        path = out_dir / f"{group}_{len(entries):02d}_{safe}.png"
        atomic.save_image(path, strip)
        entries.append(GalleryEntry(scores["name"], group, scores["miou"], scores["pixel_accuracy"], error_share, path))
    return entries, notes


def _save_array(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    atomic.save_image(path, np.ascontiguousarray(array))


def recompute_gallery(run_dir: Path, metrics: dict, per_image: Sequence[dict], k: int = 4) -> list[str]:
    """Write eval/gallery/ files for the k best and k worst images by predicting them again.

    Returns notes on why it could not (no checkpoint, no data recorded, data moved, multilabel).
    """
    ckpt = next((p for p in (run_dir / "checkpoints" / "best.pt", run_dir / "checkpoints" / "last.pt") if p.is_file()), None)
    data_spec, split = metrics.get("data"), metrics.get("split")
    if ckpt is None or not data_spec or not split or not per_image:
        return []  # nothing to recompute from; build_gallery reports the empty gallery
    if metrics.get("task") == "multilabel":
        return ["gallery: not drawn for multilabel runs"]
    from pixelwise.data import open_dataset
    from pixelwise.errors import PixelwiseError
    from pixelwise.inference.predictor import Predictor

    ranked = sorted((r for r in per_image if math.isfinite(r["miou"])), key=lambda r: r["miou"], reverse=True)
    wanted = {r["name"] for r in ranked[:k] + ranked[-k:]}
    try:
        dataset = open_dataset(data_spec, split)
        predictor = Predictor.from_checkpoint(ckpt)
        gallery_dir = run_dir / "eval" / "gallery"
        gallery_dir.mkdir(parents=True, exist_ok=True)
        for i, sample in enumerate(dataset.samples):
            if sample.name not in wanted:
                continue
            image, target = dataset.read_raw(i)
            labels = predictor.predict(image).labels
            if labels.ndim != 2 or target.ndim != 2:
                return ["gallery: not drawn for multilabel runs"]
            stem = gallery_dir / file_key(sample.name)
            _save_array(Path(f"{stem}_image.png"), image)
            _save_array(Path(f"{stem}_target.png"), target.astype(np.uint8))
            _save_array(Path(f"{stem}_pred.png"), labels.astype(np.uint8))
    except (PixelwiseError, OSError) as exc:
        return [f"gallery: could not predict the gallery images again ({exc})"]
    return []
