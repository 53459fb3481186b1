"""Mask files and label maps, in one place: reading, the rules that recognise what a mask
holds, colour packing, colouring and counting.

Every reader of masks (datasets, `data check`, layout scans, `evaluate-masks`) and every
place that colours or counts a label map calls these functions, so they all accept the
same files and apply the same rules:

- `read_mask`: a mask file as stored (index map, palette indices, RGB, multi-channel array).
- `read_label_map`: the same files, reduced to one class id per pixel (grey saved as RGB is
  its one channel; a colour image is refused).
- `is_grey_rgb`, `is_colour_mask`, `squeeze_grey`: an RGB mask whose three channels are
  equal is a grey index map; any other RGB mask is colour-coded.
- `pack_rgb` / `unpack_rgb`: (r, g, b) <-> one int64 code, for lookups and `np.unique`.
- `looks_resized`: the signature bilinear resizing leaves in a mask.
- `size_mismatch`: the one rule for "mask and image differ in size".
- `colorize`: class ids -> RGB; `class_pixel_counts`: pixels per class in one mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pixelwise.data.io import is_multichannel_tiff, open_pil, read_array
from pixelwise.errors import DataError

_INDEX_MODES = ("P", "L", "I;16", "I;16B", "I;16L", "I", "1")


# ------------------------------------------------------------------------ reading
def no_negative_ids(arr: np.ndarray, path: Path | str | None) -> np.ndarray:
    """Class ids and the ignore value are never negative; say so here, before a bincount or
    an unsigned cast deep in the pipeline turns a -1 into a crash or into class 65535."""
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and int(arr.min()) < 0:
        raise DataError(path, f"mask has negative values (min {int(arr.min())}); class ids and the ignore "
                              "value must be >= 0 (use e.g. 255 for ignored pixels)")
    return arr


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file raw: 2-D index map (uint8/uint16, palette indices kept), HxWx3 RGB,
    or a multi-channel array (.npy/.tif) as stored. Raises `DataError` naming the file."""
    if hasattr(path, "render_mask"):  # drawn from annotations (pixelwise.data.annotations), not a file
        return path.render_mask()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy" or (suffix in (".tif", ".tiff") and is_multichannel_tiff(path)):
        arr = read_array(path)
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        return no_negative_ids(arr, path)
    img = open_pil(path)
    mode = img.mode
    if mode in _INDEX_MODES:
        arr = np.array(img)  # palette PNG: the indices are the class ids
        if mode == "1":
            arr = arr.astype(np.uint8)
        elif mode.startswith("I"):
            # checked before the cast: a 32-bit -1 would otherwise wrap to 65535
            arr = no_negative_ids(arr, path)
            arr = arr.astype(np.uint16 if arr.max() <= 65535 else np.int64)
        return arr
    if mode in ("RGBA", "LA"):
        img = img.convert("RGB" if mode == "RGBA" else "L")
    elif mode != "RGB":
        img = img.convert("RGB")
    return np.array(img)


def read_label_map(path: str | Path) -> np.ndarray:
    """A mask file -> (H, W) integer class ids, from the files `read_mask` reads.

    Grey saved as RGB gives its one channel; a colour mask or a multi-channel array raises
    `DataError` (a label map holds one class id per pixel)."""
    raw = squeeze_grey(read_mask(path))
    if is_colour_mask(raw):
        raise DataError(path, "is a colour (RGB) image; a label mask holds one class id per pixel "
                              "(8-bit grey or palette PNG)")
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise DataError(path, f"a label mask must be a 2-D map of class ids, got shape {raw.shape}, dtype {raw.dtype}")
    return np.ascontiguousarray(raw)


# ------------------------------------------------------------------------ rules
def is_grey_rgb(raw: np.ndarray) -> bool:
    """True if `raw` is HxWxC (C >= 3) with its first three channels equal: a grey index map
    saved as RGB, not a colour-coded mask."""
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.shape[2] < 3:
        return False
    return bool((raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all())


def is_colour_mask(raw: np.ndarray, encoding: str = "index") -> bool:
    """True if `raw` is an RGB(A) mask to decode by colour: the data is colour-coded
    (`encoding="rgb"`), or its colours are not grey."""
    return raw.ndim == 3 and raw.shape[2] in (3, 4) and (encoding == "rgb" or not is_grey_rgb(raw))


def squeeze_grey(raw: np.ndarray) -> np.ndarray:
    """HxWx1, or grey saved as RGB(A), -> the HxW index map it holds; anything else unchanged."""
    if raw.ndim == 3 and (raw.shape[2] == 1 or (raw.shape[2] in (3, 4) and is_grey_rgb(raw))):
        return raw[..., 0]
    return raw


def pack_rgb(rgb: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """(..., 3) colours -> (...) int64 codes r << 16 | g << 8 | b."""
    rgb = np.asarray(rgb).astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(codes: Iterable[int]) -> list[tuple[int, int, int]]:
    """Inverse of `pack_rgb` for a list of codes."""
    return [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in (int(c) for c in codes)]


def size_mismatch(mask_shape: tuple[int, ...], image_shape: tuple[int, ...], image_name: str,
                  channels_first: bool = False) -> str | None:
    """The problem text if a mask's size differs from its image's, else None.

    Sizes compare (H, W); `channels_first` also accepts a (C, H, W) multi-channel mask.
    """
    if tuple(mask_shape[:2]) == tuple(image_shape[:2]):
        return None
    if channels_first and len(mask_shape) == 3 and tuple(mask_shape[1:]) == tuple(image_shape[:2]):
        return None
    h, w = mask_shape[:2]
    return f"mask is {w}x{h} but image {image_name} is {image_shape[1]}x{image_shape[0]} (WxH)"


def looks_resized(mask: Any, valid_values: Iterable[int]) -> bool:
    """True if a label map (..., H, W) carries what bilinear resizing leaves at class edges.

    Either signature is enough:
    - values that are not valid ids (or not integers) lying between valid ones, at least 80%
      of them on edges (where 4-neighbours differ); a whole region labelled with an unknown
      id is a labelling problem, not interpolation;
    - ramps: at least 20 pixels whose value lies strictly between both neighbours' along a row
      or column, and more than one per ten transitions. Nearest-neighbour resizing never makes
      a ramp; interpolation makes them at every edge between ids that differ by 2 or more, even
      when every value on the ramp is a valid id.
    """
    arr = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    valid = np.asarray(sorted({int(v) for v in valid_values}), dtype=np.float64)
    if arr.ndim < 2 or arr.size == 0 or valid.size == 0:
        return False
    a = arr.astype(np.float64)
    edge = np.zeros(a.shape, dtype=bool)
    ramps = transitions = 0
    for axis in (-1, -2):
        step = np.diff(a, axis=axis)
        changed = step != 0
        transitions += int(changed.sum())
        head = [slice(None)] * a.ndim
        tail = [slice(None)] * a.ndim
        head[axis], tail[axis] = slice(None, -1), slice(1, None)
        head, tail = tuple(head), tuple(tail)
        edge[head] |= changed  # both pixels of a changing pair sit on an edge
        edge[tail] |= changed
        before, after = step[head], step[tail]  # steps into and out of each inner pixel
        ramps += int(((before > 0) & (after > 0) | (before < 0) & (after < 0)).sum())
    if transitions and ramps >= 20 and ramps / transitions > 0.1:
        return True
    odd = ~np.isin(a, valid) & (a > valid.min()) & (a < valid.max())
    return bool(odd.any()) and float((odd & edge).sum()) / float(odd.sum()) >= 0.8


# ------------------------------------------------------------------------ colour, counts
def colorize(labels: Any, colors: Sequence[Sequence[int]], ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Class ids (any shape, numpy or torch) -> uint8 colours (*shape, 3).

    Ids without a colour (the ignore value, negatives, ids past the table) get `ignore_color`.
    """
    arr = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
    if arr.dtype.kind not in "iub":
        raise ValueError(f"labels must be integer class ids, got dtype {arr.dtype}")
    table = np.asarray(colors, dtype=np.int64).reshape(-1, 3).clip(0, 255).astype(np.uint8)
    lut = np.empty((len(table) + 1, 3), dtype=np.uint8)
    lut[: len(table)] = table
    lut[len(table)] = np.asarray(ignore_color, dtype=np.uint8)
    ids = arr.astype(np.int64, copy=False)
    return lut[np.where((ids >= 0) & (ids < len(table)), ids, len(table))]


def class_pixel_counts(mask: np.ndarray, length: int | None = None) -> np.ndarray:
    """Pixels per value 0..length-1 of one mask, int64 (length,).

    A (H, W) label map counts its ids (values past `length`, such as an ignore value above
    the classes, are left out; `length=None` counts every value up to the largest, as the
    value scans of `data check` and class inference need); a (H, W, C) multilabel mask counts
    the positives (== 1) of each class, so its ignore value never counts.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        return (mask.reshape(-1, mask.shape[2])[:, :length] == 1).sum(0, dtype=np.int64)
    counts = np.bincount(mask.reshape(-1).astype(np.int64, copy=False), minlength=length or 0)
    return (counts if length is None else counts[:length]).astype(np.int64, copy=False)
