"""Pictures of label maps: colour them, blend them over images, add a legend, show errors.

Everything here works on numpy arrays and returns uint8 RGB images (H, W, 3), so the
predict command, the report and the web service all draw the same way.
Label maps are integer (H, W) class ids; multilabel maps are (C, H, W) 0/1 masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixelwise import atomic
from pixelwise.data.masks import colorize  # the one colouriser; re-exported for callers of this module

Color = Sequence[int]

ERROR_COLOR = (255, 0, 0)
CORRECT_COLOR = (0, 160, 0)
IGNORED_GRAY = (96, 96, 96)


def _palette_array(colors: Sequence[Color]) -> np.ndarray:
    """(256, 3) uint8 lookup table: class colours first, black for every other id (e.g. 255)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    colors = np.asarray(colors, dtype=np.int64).reshape(-1, 3)
    if len(colors) > 256:
        raise ValueError(f"at most 256 class colours are supported, got {len(colors)}")
    table[: len(colors)] = np.clip(colors, 0, 255)
    return table


def colorize_multilabel(masks: np.ndarray, colors: Sequence[Color]) -> np.ndarray:
    """Binary masks (C, H, W) -> uint8 RGB (H, W, 3): the mean colour of the classes present."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"multilabel masks must be (C, H, W), got shape {masks.shape}")
    on = (masks == 1).astype(np.float32)  # values other than 0/1 (ignore) count as off
    palette = np.asarray(colors, dtype=np.float32).reshape(-1, 3)[: masks.shape[0]]
    total = np.einsum("chw,ck->hwk", on, palette)
    count = on.sum(axis=0)[..., None]
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.clip(np.rint(mean), 0, 255).astype(np.uint8)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Any HxW / HxWxC image (uint8 or uint16) -> uint8 (H, W, 3) for display."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 2:  # gray + alpha
        return np.repeat(image[..., :1], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def overlay(image: np.ndarray, labels: np.ndarray, colors: Sequence[Color], alpha: float = 0.5,
            ignore_index: int | None = 255) -> np.ndarray:
    """Blend class colours over `image` (H, W, C): uint8 (H, W, 3).

    `labels` is (H, W) class ids or (C, H, W) multilabel masks. Ignored pixels (and, for
    multilabel, pixels with no class) keep the plain image, so the overlay never hides data.
    """
    rgb = _as_rgb(image)
    labels = np.asarray(labels)
    if labels.ndim == 3:
        color = colorize_multilabel(labels, colors)
        keep = (labels == 1).any(axis=0)
    else:
        color = colorize(labels, colors)
        keep = labels < len(colors)
        if ignore_index is not None:
            keep &= labels != ignore_index
    if rgb.shape[:2] != color.shape[:2]:
        raise ValueError(f"image {rgb.shape[:2]} and labels {color.shape[:2]} differ in size")
    blended = rgb.astype(np.float32) * (1 - alpha) + color.astype(np.float32) * alpha
    out = np.where(keep[..., None], np.rint(blended), rgb)
    return out.astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def add_legend(image: np.ndarray, names: Sequence[str], colors: Sequence[Color],
               present: Sequence[int] | None = None) -> np.ndarray:
    """Append a legend panel (colour swatch + class name per row) to the right of `image`.

    `present` limits the legend to those class ids (e.g. the classes in a prediction).
    Returns uint8 (H', W + panel, 3); the height grows if the legend is taller than the image.
    """
    rgb = _as_rgb(image)
    ids = list(range(len(names))) if present is None else [int(i) for i in present if 0 <= int(i) < len(names)]
    height, width = rgb.shape[:2]
    font_size = int(np.clip(height / 40, 10, 24))
    font = _font(font_size)
    row = font_size + 6
    swatch = font_size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max((probe.textlength(str(names[i]), font=font) for i in ids), default=0)
    panel_width = int(swatch + 18 + text_width + 8)
    panel_height = max(height, 8 + row * len(ids))
    canvas = Image.new("RGB", (width + panel_width, panel_height), (255, 255, 255))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, i in enumerate(ids):
        top = 4 + k * row
        left = width + 6
        draw.rectangle([left, top, left + swatch, top + swatch], fill=tuple(int(c) for c in colors[i]), outline=(0, 0, 0))
        draw.text((left + swatch + 6, top), str(names[i]), fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def error_map(pred: np.ndarray, target: np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """Where a prediction is wrong: red = wrong, green = right, gray = ignored. uint8 (H, W, 3).

    Works for (H, W) label maps and (C, H, W) multilabel masks (a pixel is wrong if any class is).
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    ignored = target == ignore_index if ignore_index is not None else np.zeros(target.shape, bool)
    wrong = (pred != target) & ~ignored
    if pred.ndim == 3:
        wrong = wrong.any(axis=0)
        ignored = ignored.all(axis=0)
    out = np.empty(wrong.shape + (3,), dtype=np.uint8)
    out[...] = CORRECT_COLOR
    out[wrong] = ERROR_COLOR
    out[ignored] = IGNORED_GRAY
    return out


def save_label_png(path: str | Path, labels: np.ndarray, colors: Sequence[Color]) -> Path:
    """Write class ids (H, W) as a palette PNG: pixel values stay the ids, viewers show colours.

    Reading it back with Pillow (`np.asarray(Image.open(path))`) gives the ids unchanged;
    ids above 255 cannot be stored in a palette PNG and raise ValueError.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("palette PNGs hold class ids 0..255 only")
    image = Image.fromarray(labels.astype(np.uint8))  # mode L; putpalette turns it into P
    image.putpalette(_palette_array(colors).reshape(-1).tolist())
    return atomic.save_image(path, image, optimize=False)


def save_multilabel_png(path: str | Path, masks: np.ndarray) -> Path:
    """Write (C, H, W) 0/1 masks (C <= 8) as a bit-packed grayscale PNG: bit c = class c."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] > 8:
        raise ValueError(f"expected (C<=8, H, W) masks, got shape {masks.shape}")
    bits = np.zeros(masks.shape[1:], dtype=np.uint8)
    for c in range(masks.shape[0]):
        bits |= ((masks[c] == 1).astype(np.uint8) << c)
    return atomic.save_image(path, bits)
