"""Rasters larger than memory: windowed TIFF/BigTIFF/GeoTIFF in, tiled GeoTIFF out, resumable.

Reading: tifffile exposes a tiled (or finely stripped) TIFF as a zarr array, so reading a
window decodes only the tiles it touches; uncompressed contiguous files are read row band by
row band straight from the file. A file stored as a few big compressed strips cannot be read
by window (every window decodes the whole strip): it is refused with the command to retile it.

Prediction reuses the sliding-window tiler (`blended_rows`) unchanged, so a windowed run gives
exactly the labels of an in-memory tiled run with the same tiles. Finished rows go straight to
a raw scratch file beside the output; after each row of tiles the scratch file is synced and
the progress is recorded, so a killed run restarts from the last finished row of tiles. At the
end the scratch file is streamed into a tiled, compressed (Big)TIFF carrying the input's
georeferencing tags, plus a downsampled overview PNG for people to look at.

Peak memory: one band of input rows (tile x W x C), the tiler's accumulator
(K x tile x W float32) and one band of output rows; independent of the image height.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tifffile
import torch

from pixelwise import atomic
from pixelwise.errors import ConfigError, DataError
from pixelwise.inference.predictor import Predictor
from pixelwise.inference.tiling import TileGrid, blended_rows

TIFF_SUFFIXES = (".tif", ".tiff")
# GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory,
# GeoDoubleParams, GeoAsciiParams. The label map shares the input's pixel grid, so copying
# them unchanged places it exactly where the input is.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)
OUTPUT_TILE = 256
# A strip bigger than this cannot be a reading window: it would be decoded whole per window.
MAX_BLOCK_BYTES = 64 << 20
# Images with more pixels than this go through the windowed path when given as TIFF.
WINDOWED_ABOVE_PIXELS = 8192 * 8192


@dataclass
class Raster:
    """A TIFF read window by window: raster[y0:y1, x0:x1] -> (h, w, C) array.

    The tiler asks for the tiles of one row of tiles left to right, so the reader keeps the
    last band of full-width rows and serves windows inside it without decoding again.
    """

    path: Path
    height: int
    width: int
    channels: int
    dtype: np.dtype
    geo_tags: list[tuple] = field(default_factory=list)
    read_rows: Callable[[int, int], np.ndarray] | None = None   # (y0, y1) -> (y1 - y0, W, C)
    close: Callable[[], None] = lambda: None
    _band: np.ndarray | None = None
    _band_top: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        top, bottom = rows.start or 0, self.height if rows.stop is None else rows.stop
        band = self._band
        if band is None or top < self._band_top or bottom > self._band_top + band.shape[0]:
            self._band = None  # drop the old band before decoding the next one
            try:
                band = self.read_rows(top, bottom)
            except DataError:
                raise
            except Exception as exc:  # a codec or zarr error about a damaged tile
                raise DataError(self.path, f"cannot decode image rows {top}-{bottom}: {exc}") from exc
            self._band, self._band_top = band, top
        return band[top - self._band_top:bottom - self._band_top, cols]


def is_tiff(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def retile_hint(path: Path) -> str:
    return (f"retile it once, e.g. `gdal_translate -co TILED=YES -co COMPRESS=DEFLATE -co BIGTIFF=IF_SAFER "
            f"{path} {path.with_name(path.stem + '_tiled.tif')}` (GDAL) or `vips tiffsave {path} "
            f"{path.with_name(path.stem + '_tiled.tif')} --tile --compression deflate --bigtiff` (libvips)")


def open_raster(path: str | Path) -> Raster:
    """Open a TIFF for windowed reading; DataError naming the file when that is impossible."""
    path = Path(path)
    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        page = series.pages[0]
    except FileNotFoundError as exc:
        raise DataError(path, "no such file") from exc
    except Exception as exc:
        raise DataError(path, f"not a readable TIFF ({exc})") from exc
    try:
        return _open_series(path, tif, series, page)
    except BaseException:
        tif.close()
        raise


def _open_series(path: Path, tif: tifffile.TiffFile, series, page) -> Raster:
    axes, shape = series.axes, tuple(series.shape)
    if axes == "YX":
        height, width, channels, planar = shape[0], shape[1], 1, False
    elif axes == "YXS":
        height, width, channels, planar = shape[0], shape[1], shape[2], False
    elif axes in ("SYX", "CYX"):
        channels, height, width, planar = shape[0], shape[1], shape[2], True
    else:
        raise DataError(path, f"unsupported TIFF layout {axes} {shape}: expected one 2-D image "
                              "(YX, YXS or SYX), not a stack or pyramid level list")
    dtype = np.dtype(series.dtype)
    if dtype not in (np.uint8, np.uint16):
        raise DataError(path, f"pixel type {dtype} is not supported for prediction (expected uint8 or uint16)")
    geo = [(code, page.tags[code].dtype, page.tags[code].count, page.tags[code].value, True)
           for code in GEO_TAGS if code in page.tags]
    compressed = int(page.compression) != 1
    itemsize = dtype.itemsize
    if page.is_tiled:
        block_bytes = page.tilelength * page.tilewidth * (1 if planar else channels) * itemsize
    else:
        block_bytes = (page.rowsperstrip or height) * width * (1 if planar else channels) * itemsize
    raster = Raster(path, height, width, channels, dtype, geo, close=tif.close)

    if not compressed and not planar and not page.is_tiled and page.is_contiguous:
        # Uncompressed rows lie one after another: read a band with one seek and one read.
        offset, row_bytes = int(page.dataoffsets[0]), width * channels * itemsize
        stored = dtype.newbyteorder(tif.byteorder)
        handle = open(path, "rb")

        def read_raw(top: int, bottom: int) -> np.ndarray:
            handle.seek(offset + top * row_bytes)
            data = handle.read((bottom - top) * row_bytes)
            if len(data) != (bottom - top) * row_bytes:
                raise DataError(path, f"file ends before image row {bottom} (truncated)")
            return np.frombuffer(data, stored).astype(dtype, copy=False).reshape(bottom - top, width, channels)

        raster.read_rows = read_raw
        raster.close = lambda: (handle.close(), tif.close())
        return raster
    if compressed and block_bytes > MAX_BLOCK_BYTES:
        kind = "tile" if page.is_tiled else "strip"
        raise DataError(path, f"stored as compressed {kind}s of {block_bytes / 2**20:.0f} MiB each, so every "
                              f"window would decode the whole {kind}; {retile_hint(path)}")
    import zarr  # optional extra `raster`: only needed for tiled/stripped files

    array = zarr.open(series.aszarr(), mode="r")

    def read_zarr(top: int, bottom: int) -> np.ndarray:
        if planar:  # one plane per channel: (C, rows, W) -> (rows, W, C)
            return np.moveaxis(np.asarray(array[:, top:bottom]), 0, -1)
        return np.asarray(array[top:bottom]).reshape(bottom - top, width, channels)

    raster.read_rows = read_zarr
    return raster


def raster_pixels(path: str | Path) -> int | None:
    """Pixels of the first image in a TIFF without decoding it, or None if unreadable."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.series[0].pages[0]
            return int(page.imagelength) * int(page.imagewidth)
    except Exception:
        return None


# ---------------------------------------------------------------- prediction


@dataclass
class RasterResult:
    labels_path: Path
    overview_path: Path | None
    height: int
    width: int
    shares: np.ndarray           # fraction of pixels per class (multilabel: per-class coverage)
    resumed_from_tile_row: int   # 0 when the run started from the beginning


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(predictor: Predictor, path: Path, grid: TileGrid) -> dict:
    """What the scratch rows depend on: a resume with anything else changed starts over."""
    stat = path.stat()
    source = Path(predictor.source) if predictor.source else None
    model = _file_digest(source) if source is not None and source.is_file() else predictor.source
    return {"input": str(path.resolve()), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
            "model": model, "tile": grid.tile_h, "overlap": grid.overlap, "margin": grid.margin,
            "blend": predictor.blend, "tta": [v.__dict__ for v in predictor.tta],
            "shape": [grid.height, grid.width]}


def predict_raster(predictor: Predictor, path: str | Path, out: str | Path, *, name: str | None = None,
                   overview_size: int = 2048, alpha: float = 0.5, progress: bool = True) -> RasterResult:
    """Predict one large TIFF window by window into OUT/labels/NAME.tif (+ OUT/overlays/NAME.png).

    Rerunning after a kill resumes from the last finished row of tiles, provided the input,
    model and tiling settings are unchanged (otherwise it starts over and says so).
    """
    path, out = Path(path), Path(out)
    name = name or path.stem
    if predictor.decodes:
        raise ConfigError(f"{predictor.source}: the ONNX graph outputs labels, but windowed prediction blends "
                          "tile logits; export it without --with-decoding")
    task = predictor.task
    raster = open_raster(path)
    try:
        predictor.preprocess.channels(np.zeros((1, 1, raster.channels), raster.dtype), str(path))
        grid = TileGrid.plan(raster.height, raster.width, predictor.tile, min(predictor.overlap, predictor.tile - 1))
        labels_dir = out / "labels"
        labels_dir.mkdir(parents=True, exist_ok=True)
        scratch_dir = labels_dir / f".{name}.partial"
        state_path, raw_path = scratch_dir / "state.json", scratch_dir / "labels.raw"
        planes = task.num_classes if task.kind == "multilabel" else 1
        row_bytes = raster.width * planes
        fingerprint = _fingerprint(predictor, path, grid)

        state = _load_state(state_path, fingerprint)
        if state is None:
            scratch_dir.mkdir(parents=True, exist_ok=True)
            with open(raw_path, "wb") as handle:
                handle.truncate(raster.height * row_bytes)  # sparse: disk fills as rows finish
            state = {"fingerprint": fingerprint, "tile_rows_done": 0, "counts": [0] * predictor.num_classes}
            atomic.write_json(state_path, state)
        start = int(state["tile_rows_done"])
        if start:
            print(f"{path}: resuming at tile row {start + 1} of {len(grid.ys)} "
                  f"(rows 0-{grid.rows_final_after(start - 1) - 1} already done)", file=sys.stderr)
        counts = np.asarray(state["counts"], dtype=np.int64)
        row_counts = np.zeros_like(counts)

        from tqdm import tqdm

        bar = tqdm(total=len(grid.ys), initial=start, desc=f"predict {path.name}", unit="tile row",
                   disable=not progress or None, file=sys.stderr)
        fd = os.open(raw_path, os.O_WRONLY)
        try:
            for r, top, bottom, chunk in blended_rows(predictor.logits_fn(), raster, grid, predictor.blend,
                                                      predictor.tile_batch_size, preprocess=predictor.preprocess,
                                                      resume_tile_row=start):
                decoded = task.decode(chunk[None])[0].to(torch.uint8).numpy()
                if planes > 1:  # multilabel (K, rows, W) -> pixel-interleaved (rows, W, K)
                    row_counts += (decoded.reshape(planes, -1) == 1).sum(axis=1, dtype=np.int64)
                    decoded = np.ascontiguousarray(np.moveaxis(decoded, 0, -1))
                else:
                    row_counts += np.bincount(decoded.reshape(-1), minlength=len(counts))[: len(counts)]
                os.pwrite(fd, decoded.tobytes(), top * row_bytes)
                if bottom == grid.rows_final_after(r):  # this row of tiles is complete: record it
                    os.fsync(fd)
                    counts += row_counts
                    row_counts[:] = 0
                    state.update(tile_rows_done=r + 1, counts=counts.tolist())
                    atomic.write_json(state_path, state)
                    bar.update(1)
        finally:
            os.close(fd)
            bar.close()

        labels_path = labels_dir / f"{name}.tif"
        _write_labels_tiff(raw_path, labels_path, raster, planes, predictor.colors)
        overview_path = None
        if overview_size:
            overview_path = _write_overview(raw_path, raster, planes, predictor, out / "overlays" / f"{name}.png",
                                            overview_size, alpha)
        for leftover in (raw_path, state_path):
            leftover.unlink(missing_ok=True)
        scratch_dir.rmdir()
        total = raster.height * raster.width
        return RasterResult(labels_path, overview_path, raster.height, raster.width, counts / max(total, 1), start)
    finally:
        raster.close()


def _load_state(state_path: Path, fingerprint: dict) -> dict | None:
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint:
        print(f"{state_path.parent}: input, model or tiling changed since the interrupted run; starting over",
              file=sys.stderr)
        return None
    return state


def _raw_rows(raw_path: Path, width: int, planes: int, top: int, bottom: int) -> np.ndarray:
    row_bytes = width * planes
    with open(raw_path, "rb") as handle:
        handle.seek(top * row_bytes)
        data = handle.read((bottom - top) * row_bytes)
    shape = (bottom - top, width, planes) if planes > 1 else (bottom - top, width)
    return np.frombuffer(data, np.uint8).reshape(shape)


def _write_labels_tiff(raw_path: Path, target: Path, raster: Raster, planes: int, colors) -> None:
    """Stream the scratch rows into a tiled, deflate-compressed (Big)TIFF, georeferenced like the input."""
    tile = OUTPUT_TILE
    height, width = raster.height, raster.width

    def tiles() -> Iterator[np.ndarray]:
        for top in range(0, height, tile):
            band = _raw_rows(raw_path, width, planes, top, min(height, top + tile))
            for left in range(0, width, tile):
                block = np.zeros((tile, tile, planes) if planes > 1 else (tile, tile), np.uint8)
                part = band[:, left:left + tile]
                block[:part.shape[0], :part.shape[1]] = part
                yield block

    options: dict = {}
    if planes == 1:  # a palette TIFF: GIS tools and image viewers show the class colours
        colormap = np.zeros((3, 256), np.uint16)
        for index, color in enumerate(colors[:256]):
            colormap[:, index] = np.asarray(color, np.uint16) * 257
        options.update(photometric="palette", colormap=colormap)
    else:
        options.update(photometric="minisblack", planarconfig="contig")
    shape = (height, width, planes) if planes > 1 else (height, width)
    with atomic.atomic_path(target) as tmp, tifffile.TiffWriter(tmp, bigtiff=height * width * planes > 2**31) as writer:
        writer.write(tiles(), shape=shape, dtype=np.uint8, tile=(tile, tile), compression="zlib",
                     extratags=raster.geo_tags, **options)


def _write_overview(raw_path: Path, raster: Raster, planes: int, predictor: Predictor, target: Path,
                    size: int, alpha: float) -> Path:
    """A small PNG of the image with the label colours blended in, read back in bands."""
    from pixelwise.visualize import add_legend, overlay

    step = max(1, math.ceil(max(raster.height, raster.width) / size))
    band_rows = max(step, (OUTPUT_TILE // step) * step)
    images, labels = [], []
    for top in range(0, raster.height, band_rows):
        bottom = min(raster.height, top + band_rows)
        raster._band = None
        images.append(raster.read_rows(top, bottom)[::step, ::step])
        labels.append(_raw_rows(raw_path, raster.width, planes, top, bottom)[::step, ::step])
    image = predictor.preprocess.channels(np.concatenate(images), str(raster.path))
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    small = np.concatenate(labels)
    if planes > 1:
        small = np.moveaxis(small, -1, 0)
        present = [c for c in range(planes) if small[c].any()]
    else:
        present = [int(c) for c in np.unique(small) if c < len(predictor.class_names)]
    picture = add_legend(overlay(image, small, predictor.colors, alpha=alpha, ignore_index=None),
                         predictor.class_names, predictor.colors, present=present)
    return atomic.save_image(target, picture)


__all__ = ["Raster", "RasterResult", "open_raster", "predict_raster", "is_tiff", "raster_pixels",
           "WINDOWED_ABOVE_PIXELS"]
