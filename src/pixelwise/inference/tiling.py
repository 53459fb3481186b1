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

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

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


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image go; shared by in-memory and windowed (raster) prediction."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    margin: int
    ramp: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def plan(cls, height: int, width: int, tile: int = 512, overlap: int | None = None,
             margin: int | None = None) -> "TileGrid":
        overlap = tile // 4 if overlap is None else int(overlap)
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
        margin = overlap // 4 if margin is None else int(margin)
        margin = max(0, min(margin, overlap // 2))
        tile_h, tile_w = min(tile, height), min(tile, width)
        return cls(height, width, tile_h, tile_w, overlap, margin, max(1, overlap - 2 * margin),
                   tuple(tile_starts(height, tile_h, overlap)), tuple(tile_starts(width, tile_w, overlap)))

    def rows_final_after(self, r: int) -> int:
        """Image rows that are final once tile row `r` is done: [0, this)."""
        return self.ys[r + 1] if r + 1 < len(self.ys) else self.height

    def first_tile_row_reaching(self, row: int) -> int:
        """The first tile row whose tiles cover image row `row` or later rows."""
        return next(r for r, y in enumerate(self.ys) if y + self.tile_h > row)


def blended_rows(
    model_fn: ModelFn,
    image: Any,
    grid: TileGrid,
    blend: Blend = "gaussian",
    batch_size: int = 4,
    *,
    preprocess: Preprocess | None = None,
    resume_tile_row: int = 0,
) -> Iterator[tuple[int, int, int, Tensor]]:
    """Blended logits, top to bottom, as soon as no later tile can change them.

    Yields (tile_row, top, bottom, logits (K, bottom - top, W)) in blocks of at most
    _FINALISE_ROWS rows; the last block of tile row r ends at `grid.rows_final_after(r)`.
    `image` is anything sliced as image[y0:y1, x0:x1] -> (h, w, C) array: a numpy array or a
    windowed reader over a file. `resume_tile_row` skips the rows finished before tile row r:
    it recomputes only the earlier tile rows that reach into them, in the same order, so the
    blended values are bit-identical to an uninterrupted pass.
    """
    preprocess = preprocess or _default_preprocess
    width = grid.width
    tile_h, tile_w, margin, ramp = grid.tile_h, grid.tile_w, grid.margin, grid.ramp
    ys, xs = grid.ys, grid.xs
    skip_before = ys[resume_tile_row] if resume_tile_row < len(ys) else grid.height
    first = grid.first_tile_row_reaching(skip_before) if skip_before < grid.height else len(ys)

    # Column windows depend only on whether a tile edge is inside the image.
    col_windows = [
        torch.from_numpy(window_1d(tile_w, blend, margin if x > 0 else 0, margin if x + tile_w < width else 0, ramp))
        for x in xs
    ]
    acc: Tensor | None = None      # (K, tile_h, W) weighted logit sums for the current band
    wsum: Tensor | None = None     # (tile_h, W) summed weights

    for r in range(first, len(ys)):
        y = ys[r]
        row_window = torch.from_numpy(
            window_1d(tile_h, blend, margin if y > 0 else 0, margin if y + tile_h < grid.height else 0, ramp)
        )
        for start in range(0, len(xs), batch_size):
            batch_xs = xs[start:start + batch_size]
            batch = torch.stack([preprocess(image[y:y + tile_h, x:x + tile_w]) for x in batch_xs])
            logits = model_fn(batch).detach().float().cpu()  # (B, K, tile_h, tile_w)
            if acc is None:
                acc = torch.zeros(logits.shape[1], tile_h, width)
                wsum = torch.zeros(tile_h, width)
            for k, x in enumerate(batch_xs):
                weight = row_window[:, None] * col_windows[start + k][None, :]  # (tile_h, tile_w)
                acc[:, :, x:x + tile_w].addcmul_(logits[k], weight)
                wsum[:, x:x + tile_w].add_(weight)

        # Rows above the next tile row's start are final: no later tile reaches them.
        done = grid.rows_final_after(r) - y
        for top in range(0, done, _FINALISE_ROWS):  # small blocks keep the temporaries small
            bottom = min(done, top + _FINALISE_ROWS)
            if y + bottom <= skip_before:
                continue  # finished before the resume point
            top = max(top, skip_before - y)
            yield r, y + top, y + bottom, acc[:, top:bottom] / wsum[top:bottom].clamp_min(1e-12)
        _shift_up(acc, wsum, done)


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
    height, width = image.shape[:2]
    grid = TileGrid.plan(height, width, tile, overlap, margin)
    result: np.ndarray | None = None
    for _, top, bottom, chunk in blended_rows(model_fn, image, grid, blend, batch_size, preprocess=preprocess):
        channels = chunk.shape[0]
        if result is None:
            if output == "labels":
                shape = (channels, height, width) if task.kind == "multilabel" else (height, width)
                result = np.zeros(shape, dtype=np.uint8)
            else:
                result = np.zeros((channels, height, width), dtype=np.float32)
        rows = slice(top, bottom)
        if output == "labels":
            decoded = task.decode(chunk[None])[0].to(torch.uint8).numpy()
            if task.kind == "multilabel":
                result[:, rows] = decoded
            else:
                result[rows] = decoded
        elif output == "probabilities":
            result[:, rows] = task.probabilities(chunk[None])[0].numpy()
        else:
            result[:, rows] = chunk.numpy()
    return result


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


__all__ = ["TileGrid", "blended_rows", "predict_tiled", "tiled_logits", "tiled_probabilities", "tile_starts", "window_1d", "tile_count"]
