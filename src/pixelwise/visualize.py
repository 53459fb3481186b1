"""Pictures of label maps: colour them, blend them over images, add a legend, show errors.

Everything here works on numpy arrays and returns uint8 RGB images (H, W, 3), so the
predict command, the report and the web service all draw the same way.
Label maps are integer (H, W) class ids; multilabel maps are (C, H, W) 0/1 masks.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

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


def _legend_layout(height: int, names: Sequence[str], present: Sequence[int] | None):
    """(class ids listed, font, font size, panel width, panel height) of the legend for an image `height` tall."""
    ids = list(range(len(names))) if present is None else [int(i) for i in present if 0 <= int(i) < len(names)]
    font_size = int(np.clip(height / 40, 10, 24))
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max((probe.textlength(str(names[i]), font=font) for i in ids), default=0)
    panel_width = int(font_size + 18 + text_width + 8)
    panel_height = max(height, 8 + (font_size + 6) * len(ids))
    return ids, font, font_size, panel_width, panel_height


def legend_panel(height: int, names: Sequence[str], colors: Sequence[Color],
                 present: Sequence[int] | None = None) -> np.ndarray:
    """The legend drawn beside an image `height` rows tall: uint8 (panel_height, panel_width, 3).

    White, one colour swatch and class name per row; `present` limits it to those class ids.
    Its height is the image's, or more when the rows do not fit.
    """
    ids, font, font_size, panel_width, panel_height = _legend_layout(height, names, present)
    row, swatch = font_size + 6, font_size
    canvas = Image.new("RGB", (panel_width, panel_height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, i in enumerate(ids):
        top = 4 + k * row
        left = 6
        draw.rectangle([left, top, left + swatch, top + swatch], fill=tuple(int(c) for c in colors[i]), outline=(0, 0, 0))
        draw.text((left + swatch + 6, top), str(names[i]), fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def add_legend(image: np.ndarray, names: Sequence[str], colors: Sequence[Color],
               present: Sequence[int] | None = None) -> np.ndarray:
    """Append a legend panel (colour swatch + class name per row) to the right of `image`.

    `present` limits the legend to those class ids (e.g. the classes in a prediction).
    Returns uint8 (H', W + panel, 3); the height grows if the legend is taller than the image
    (the added rows are white under the image).
    """
    rgb = _as_rgb(image)
    height, width = rgb.shape[:2]
    panel = legend_panel(height, names, colors, present)
    out = np.full((panel.shape[0], width + panel.shape[1], 3), 255, dtype=np.uint8)
    out[:height, :width] = rgb
    out[:, width:] = panel
    return out


def overlay_strips(image: np.ndarray, labels: np.ndarray, colors: Sequence[Color], alpha: float = 0.5,
                   ignore_index: int | None = 255, *, names: Sequence[str] | None = None,
                   present: Sequence[int] | None = None, rows: int = 128) -> tuple[int, int, Iterator[np.ndarray]]:
    """`add_legend(overlay(...))` (or `overlay(...)` when `names` is None), `rows` image rows at a time.

    Returns (width, height, strips): strips are uint8 (h, width, 3) blocks, top to bottom, equal
    to the rows of the whole-image picture, so a large image's overlay never exists in full
    (write it with `write_png_strips`). Memory: a few float copies of one strip.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    height, width = image.shape[:2]
    if (labels.shape[1:] if labels.ndim == 3 else labels.shape) != (height, width):
        raise ValueError(f"image {(height, width)} and labels {labels.shape} differ in size")
    panel = None if names is None else legend_panel(height, names, colors, present)
    total_w = width + (0 if panel is None else panel.shape[1])
    total_h = height if panel is None else panel.shape[0]

    def strips() -> Iterator[np.ndarray]:
        for top in range(0, total_h, rows):
            bottom = min(total_h, top + rows)
            strip = np.full((bottom - top, total_w, 3), 255, dtype=np.uint8)
            if top < height:
                end = min(bottom, height)
                part = labels[:, top:end] if labels.ndim == 3 else labels[top:end]
                strip[:end - top, :width] = overlay(image[top:end], part, colors, alpha, ignore_index)
            if panel is not None:
                strip[:, width:] = panel[top:bottom]
            yield strip

    return total_w, total_h, strips()


def write_png_strips(handle: BinaryIO, width: int, height: int, strips: Iterable[np.ndarray],
                     compress_level: int = 6) -> None:
    """Encode an 8-bit RGB PNG from row strips (h, width, 3), streaming: one strip in memory.

    Each scanline gets the PNG filter (None, Sub, Up or Paeth) whose output has the smallest
    sum of absolute values, the usual adaptive heuristic (libpng's, Pillow's), computed for a
    whole strip at once.
    """

    def chunk(kind: bytes, data: bytes) -> None:
        handle.write(struct.pack(">I", len(data)) + kind + data)
        handle.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    handle.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))  # 8-bit RGB, no interlace
    compressor = zlib.compressobj(compress_level)
    previous = np.zeros(width * 3, dtype=np.uint8)  # the row above the first is all zeros
    written = 0
    for strip in strips:
        strip = np.asarray(strip, dtype=np.uint8)
        if strip.ndim != 3 or strip.shape[1:] != (width, 3):
            raise ValueError(f"strip of shape {strip.shape} does not fit a {width}-pixel-wide RGB PNG")
        flat = strip.reshape(len(strip), width * 3)
        raw = np.empty((len(strip), width * 3 + 1), dtype=np.uint8)
        raw[:, 0], raw[:, 1:] = _filter_rows(flat, previous)
        previous = flat[-1].copy()
        written += len(strip)
        data = compressor.compress(raw.tobytes())
        if data:
            chunk(b"IDAT", data)
    if written != height:
        raise ValueError(f"strips hold {written} rows, the PNG header says {height}")
    chunk(b"IDAT", compressor.flush())
    chunk(b"IEND", b"")


def _filter_rows(rows: np.ndarray, above_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive PNG filtering of RGB scanlines (h, W*3): (filter type per row, filtered bytes)."""
    up = np.concatenate([above_first[None], rows[:-1]])
    left = np.zeros_like(rows)
    left[:, 3:] = rows[:, :-3]
    candidates = (0, rows), (1, rows - left), (2, rows - up), (4, rows - _paeth_prediction(rows, above_first))
    # uint8 differences wrap modulo 256, as PNG wants; scored as signed bytes (small either way = good)
    scores = np.stack([np.abs(data.view(np.int8).astype(np.int16)).sum(axis=1, dtype=np.int64)
                       for _, data in candidates])
    best = scores.argmin(axis=0)
    out = np.empty_like(rows)
    for index, (_, data) in enumerate(candidates):
        out[best == index] = data[best == index]
    return np.array([kind for kind, _ in candidates], dtype=np.uint8)[best], out


def _paeth_prediction(rows: np.ndarray, above_first: np.ndarray) -> np.ndarray:
    """PNG's Paeth predictor for RGB scanlines (h, W*3) whose first row has `above_first` above it."""
    cur = rows.astype(np.int16)
    up = np.concatenate([above_first[None].astype(np.int16), cur[:-1]])
    left = np.zeros_like(cur)
    left[:, 3:] = cur[:, :-3]
    upleft = np.zeros_like(up)
    upleft[:, 3:] = up[:, :-3]
    estimate = left + up - upleft
    pa, pb, pc = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - upleft)
    return np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft)).astype(np.uint8)


def save_overlay_png(path: str | Path, image: np.ndarray, labels: np.ndarray, colors: Sequence[Color],
                     alpha: float = 0.5, ignore_index: int | None = 255, *, names: Sequence[str] | None = None,
                     present: Sequence[int] | None = None, rows: int = 128) -> Path:
    """Blend and write an overlay (with legend when `names` is given) strip by strip, atomically.

    The same picture as saving `add_legend(overlay(...))`, without a full-size copy of it.
    """
    width, height, strips = overlay_strips(image, labels, colors, alpha, ignore_index,
                                           names=names, present=present, rows=rows)
    return atomic.write_with(path, lambda handle: write_png_strips(handle, width, height, strips))


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
