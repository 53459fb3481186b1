"""Sliding-window inference for images larger than a tile (satellite scenes, slides).

The image is cut into overlapping tiles; each tile's logits are weighted by a window
(Gaussian or linear), summed into an accumulator and divided by the summed weights.
Windows are exactly zero in a `margin` along tile edges that lie inside the image, because
a convolution sees zero padding there instead of the real neighbours; so with a model whose
receptive field fits inside the margin, tiled logits equal whole-image logits.

Memory stays bounded: tiles are processed one row of tiles at a time, and the accumulator
only holds the band of image rows the current tile row covers (C x tile x W floats). Rows no
later tile touches are divided, decoded and written into a uint8 label map straight away.
Asking for probabilities or logits needs the full C x H x W float map (that is the output).
Normalisation happens per tile (`preprocess`), so no float copy of the whole image exists.
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from pixelwise.tasks import Task

ModelFn = Callable[[Tensor], Tensor]          # (N, C_in, h, w) float -> (N, K, h, w) logits
Preprocess = Callable[[np.ndarray], Tensor]   # (h, w, C) raw tile -> (C_in, h, w) float
Blend = Literal["gaussian", "linear"]
Output = Literal["labels", "probabilities", "logits"]
_FINALISE_ROWS = 64


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering [0, size); the last one ends at `size`."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def window_1d(length: int, blend: Blend, margin_start: int, margin_end: int, ramp: int) -> np.ndarray:
    """Per-pixel weight along one tile axis; zero in the margins, positive everywhere else.

    gaussian: exp(-d^2 / 2 sigma^2) around the tile centre, sigma = length / 4.
    linear: rises from the margin over `ramp` pixels, then flat (only on sides with a margin,
    i.e. sides inside the image; an image border has no neighbour to blend with).
    """
    x = np.arange(length, dtype=np.float64)
    if blend == "gaussian":
        sigma = max(length / 4.0, 1.0)
        w = np.exp(-((x - (length - 1) / 2.0) ** 2) / (2 * sigma**2))
        w = np.maximum(w, 1e-3)  # far corners still count a little: never divide by ~0
    elif blend == "linear":
        w = np.ones(length)
        ramp = max(ramp, 1)
        if margin_start > 0:
            w = np.minimum(w, (x - margin_start + 1) / ramp)
        if margin_end > 0:
            w = np.minimum(w, (length - margin_end - x) / ramp)
        w = np.clip(w, 1e-3, 1.0)
    else:
        raise ValueError(f"unknown blend {blend!r}; accepted: gaussian, linear")
    w[:margin_start] = 0.0
    if margin_end:
        w[length - margin_end:] = 0.0
    return w.astype(np.float32)


def _default_preprocess(tile: np.ndarray) -> Tensor:
    tile = np.ascontiguousarray(tile)
    x = torch.from_numpy(tile if tile.flags.writeable else tile.copy())
    if x.ndim == 2:
        x = x[..., None]
    scale = 255.0 if tile.dtype == np.uint8 else 65535.0 if tile.dtype == np.uint16 else 1.0
    return x.permute(2, 0, 1).float() / scale


def predict_tiled(
    model_fn: ModelFn,
    image: np.ndarray,
    tile: int = 512,
    overlap: int | None = None,
    blend: Blend = "gaussian",
    batch_size: int = 4,
    task: Task | None = None,
    *,
    preprocess: Preprocess | None = None,
    margin: int | None = None,
    output: Output = "labels",
) -> np.ndarray:
    """Sliding-window prediction over `image` (H, W, C), any size.

    model_fn: normalised tiles (N, C_in, h, w) -> logits (N, K, h, w) (float, any device).
    tile/overlap: tile side and overlap in pixels (overlap defaults to tile // 4).
    margin: pixels along inner tile edges given zero weight (defaults to overlap // 4; at most
        overlap // 2 so every pixel stays covered). Make it >= the model's receptive-field
        radius for tiled == whole-image.
    preprocess: raw tile (h, w, C) -> (C_in, h, w) float; default scales to 0..1.
    output: "labels" -> uint8 (H, W) class ids (multilabel: (K, H, W) 0/1), streaming, memory
        ~ K x tile x W floats; "probabilities"/"logits" -> float32 (K, H, W), the full map.
    """
    if output not in ("labels", "probabilities", "logits"):
        raise ValueError(f"unknown output {output!r}; accepted: labels, probabilities, logits")
    task = task or Task("multiclass", num_classes=2)  # only used to decode; multiclass = argmax
    preprocess = preprocess or _default_preprocess
    height, width = image.shape[:2]
    tile_h, tile_w = min(tile, height), min(tile, width)
    overlap = tile // 4 if overlap is None else int(overlap)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    margin = overlap // 4 if margin is None else int(margin)
    margin = max(0, min(margin, overlap // 2))
    ramp = max(1, overlap - 2 * margin)
    ys = tile_starts(height, tile_h, overlap)
    xs = tile_starts(width, tile_w, overlap)

    # Column windows depend only on whether a tile edge is inside the image.
    col_windows = [
        torch.from_numpy(window_1d(tile_w, blend, margin if x > 0 else 0, margin if x + tile_w < width else 0, ramp))
        for x in xs
    ]

    channels: int | None = None
    acc: Tensor | None = None      # (K, tile_h, W) weighted logit sums for the current band
    wsum: Tensor | None = None     # (tile_h, W) summed weights
    full: np.ndarray | None = None
    labels: np.ndarray | None = None

    for r, y in enumerate(ys):
        row_window = torch.from_numpy(
            window_1d(tile_h, blend, margin if y > 0 else 0, margin if y + tile_h < height else 0, ramp)
        )
        for start in range(0, len(xs), batch_size):
            batch_xs = xs[start:start + batch_size]
            batch = torch.stack([preprocess(image[y:y + tile_h, x:x + tile_w]) for x in batch_xs])
            logits = model_fn(batch).detach().float().cpu()  # (B, K, tile_h, tile_w)
            if acc is None:
                channels = logits.shape[1]
                acc = torch.zeros(channels, tile_h, width)
                wsum = torch.zeros(tile_h, width)
                if output == "labels":
                    shape = (channels, height, width) if task.kind == "multilabel" else (height, width)
                    labels = np.zeros(shape, dtype=np.uint8)
                else:
                    full = np.zeros((channels, height, width), dtype=np.float32)
            for k, x in enumerate(batch_xs):
                weight = row_window[:, None] * col_windows[start + k][None, :]  # (tile_h, tile_w)
                acc[:, :, x:x + tile_w].addcmul_(logits[k], weight)
                wsum[:, x:x + tile_w].add_(weight)

        # Rows above the next tile row's start are final: no later tile reaches them.
        done = (ys[r + 1] - y) if r + 1 < len(ys) else tile_h
        for top in range(0, done, _FINALISE_ROWS):  # small blocks keep the temporaries small
            bottom = min(done, top + _FINALISE_ROWS)
            chunk = acc[:, top:bottom] / wsum[top:bottom].clamp_min(1e-12)  # (K, rows, W) blended logits
            rows = slice(y + top, y + bottom)
            if output == "labels":
                decoded = task.decode(chunk[None])[0].to(torch.uint8).numpy()
                if task.kind == "multilabel":
                    labels[:, rows] = decoded
                else:
                    labels[rows] = decoded
            elif output == "probabilities":
                full[:, rows] = task.probabilities(chunk[None])[0].numpy()
            else:
                full[:, rows] = chunk.numpy()
        _shift_up(acc, wsum, done)

    return labels if output == "labels" else full


def _shift_up(acc: Tensor, wsum: Tensor, rows: int) -> None:
    """Move the band up by `rows` in place (zeros enter at the bottom), without a second band.

    Copies go in blocks of `rows` so source and destination never overlap.
    """
    height = acc.shape[1]
    if rows >= height:
        acc.zero_()
        wsum.zero_()
        return
    for top in range(0, height - rows, rows):
        n = min(rows, height - rows - top)
        acc[:, top:top + n].copy_(acc[:, top + rows:top + rows + n])
        wsum[top:top + n].copy_(wsum[top + rows:top + rows + n])
    acc[:, height - rows:].zero_()
    wsum[height - rows:].zero_()


def tiled_logits(model_fn: ModelFn, image: np.ndarray, tile: int = 512, overlap: int | None = None,
                 blend: Blend = "gaussian", batch_size: int = 4, *, preprocess: Preprocess | None = None,
                 margin: int | None = None) -> np.ndarray:
    """Blended logits float32 (K, H, W) for the whole image (holds the full map)."""
    return predict_tiled(model_fn, image, tile, overlap, blend, batch_size, None,
                         preprocess=preprocess, margin=margin, output="logits")


def tiled_probabilities(model_fn: ModelFn, image: np.ndarray, task: Task, tile: int = 512,
                        overlap: int | None = None, blend: Blend = "gaussian", batch_size: int = 4, *,
                        preprocess: Preprocess | None = None, margin: int | None = None) -> np.ndarray:
    """Probabilities float32 (K, H, W) from blended logits (holds the full map)."""
    return predict_tiled(model_fn, image, tile, overlap, blend, batch_size, task,
                         preprocess=preprocess, margin=margin, output="probabilities")


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles `predict_tiled` runs for an image of this size."""
    return len(tile_starts(height, min(tile, height), overlap)) * len(tile_starts(width, min(tile, width), overlap))


__all__ = ["predict_tiled", "tiled_logits", "tiled_probabilities", "tile_starts", "window_1d", "tile_count"]
