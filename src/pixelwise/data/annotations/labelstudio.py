"""Label Studio JSON export (labelstud.io, "JSON" export): a list of tasks.

Task: {"id", "data": {"image": url}, "annotations": [{"id", "result": [...], "was_cancelled"}]}
(older exports say "completions"). The first annotation not cancelled is used. Results:
polygonlabels ({"points": [[x%, y%], ...]}), rectanglelabels ({x, y, width, height,
rotation} in percent, rotated about the top-left corner), ellipselabels ({x, y, radiusX,
radiusY, rotation} in percent), brushlabels ({"format": "rle", "rle": [bytes]}: Label Studio's
own RLE of the RGBA image, the mask being alpha > 0); keypoints are ignored and counted.
Percent is of `original_width` / `original_height`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from pixelwise.data.annotations.model import AnnotatedImage, AnnotationSet, ClassMap, Shape
from pixelwise.data.annotations.rasterise import box_polygon, ellipse_polygon, polygon_shape
from pixelwise.errors import DataError

_LABEL_KEYS = ("polygonlabels", "rectanglelabels", "ellipselabels", "brushlabels", "labels")


def is_labelstudio(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(t, dict) and "data" in t for t in data[:5]) \
        and any("annotations" in t or "completions" in t for t in data[:5])


def _annotation(task: dict) -> dict | None:
    for ann in task.get("annotations") or task.get("completions") or []:
        if isinstance(ann, dict) and not ann.get("was_cancelled"):
            return ann
    return None


def _label(value: dict) -> str | None:
    for key in _LABEL_KEYS:
        if value.get(key):
            return str(value[key][0])
    return None


def label_names(data: list) -> list[str]:
    names = []
    for task in data:
        ann = _annotation(task) if isinstance(task, dict) else None
        for r in (ann or {}).get("result") or []:
            name = _label(r.get("value") or {}) if isinstance(r, dict) else None
            if name is not None and name not in names:
                names.append(name)
    return sorted(names)


def _image_ref(url: str) -> list[str]:
    """File names to look for: the path in the URL, a local-files ?d= path, and the upload
    name without the 8-hex prefix Label Studio adds ("5f3a1b2c-photo.png")."""
    parsed = urlparse(url)
    refs = []
    if "d" in parse_qs(parsed.query):
        refs.append(unquote(parse_qs(parsed.query)["d"][0]))
    name = unquote(Path(parsed.path).name)
    if name:
        refs.append(name)
        stripped = re.sub(r"^[0-9a-f]{8}-", "", name)
        if stripped != name:
            refs.append(stripped)
    return refs


def read(path: Path, data: list, cmap: ClassMap | None, image_roots: list[Path]) -> AnnotationSet:
    from pixelwise.data.io import image_size

    if cmap is None:
        cmap = ClassMap.from_names(label_names(data), f"{path.name} labels")
    out = AnnotationSet("labelstudio", path, cmap.table, cmap.fill)
    for t, task in enumerate(data):
        tid = task.get("id", t) if isinstance(task, dict) else t
        url = str(((task.get("data") or {}) if isinstance(task, dict) else {}).get("image", ""))
        found = out.locate(_image_ref(url), image_roots, f"{path}: task {tid}", shown=url)
        if found is None:
            continue
        ann = _annotation(task)
        results = [r for r in (ann or {}).get("result") or [] if isinstance(r, dict)]
        sized = [r for r in results if "original_width" in r]
        w, h = (int(sized[0]["original_width"]), int(sized[0]["original_height"])) if sized else image_size(found)
        img = AnnotatedImage(found.stem, found, w, h, source=str(path))
        out.images.append(img)
        for r in results:
            where = f"{path}: task {tid}, result {r.get('id', '?')}"
            shape = _shape(r, w, h, where, cmap, out)
            if shape is not None:
                img.shapes.append(shape)
                out.read += 1
    return out


def _shape(r: dict, w: int, h: int, where: str, cmap: ClassMap, out: AnnotationSet) -> Shape | None:
    kind = str(r.get("type", "")).lower()
    value = r.get("value") or {}
    if kind == "keypointlabels":
        out.skip(where, "keypoints ignored (no area)", error=False)
        return None
    if kind in ("choices", "textarea", "rating", "taxonomy", "number", "datetime", "pairwise", "relation"):
        return None  # answers about the whole task, not regions: nothing to draw, nothing lost
    label = _label(value)
    if kind not in ("polygonlabels", "rectanglelabels", "ellipselabels", "brushlabels") or label is None:
        out.skip(where, "unsupported result", f"type {kind!r}", error=False)
        return None
    cid = cmap.lookup(label)
    if cid is None:
        out.skip(where, "unknown category", f"{label!r} is not in {cmap.table.source}")
        return None
    sx, sy = w / 100.0, h / 100.0
    try:
        if kind == "polygonlabels":
            pts = np.asarray(value.get("points") or [], np.float64).reshape(-1, 2) * (sx, sy)
            return polygon_shape(pts, cid, where, out)
        if kind == "rectanglelabels":
            x, y = float(value["x"]) * sx, float(value["y"]) * sy
            bw, bh = float(value["width"]) * sx, float(value["height"]) * sy
            return Shape(cid, where, polygons=[box_polygon(x, y, x + bw, y + bh, float(value.get("rotation", 0)),
                                                           pivot=(x, y))])
        if kind == "ellipselabels":
            return Shape(cid, where, polygons=[ellipse_polygon(float(value["x"]) * sx, float(value["y"]) * sy,
                                                               float(value["radiusX"]) * sx,
                                                               float(value["radiusY"]) * sy,
                                                               float(value.get("rotation", 0)))])
    except (KeyError, TypeError, ValueError) as exc:
        out.skip(where, "malformed result", f"{type(exc).__name__}: {exc}")
        return None
    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        out.skip(where, "malformed brush", "expected value.format 'rle' and a list value.rle")
        return None
    try:
        rgba = decode_brush_rle(value["rle"])
    except DataError as exc:
        out.skip(where, "malformed brush", exc.problem)
        return None
    if rgba.size != w * h * 4:
        out.skip(where, "RLE size mismatch", f"brush holds {rgba.size} values, a {w}x{h} RGBA image {w * h * 4}")
        return None
    return Shape(cid, where, bitmap=rgba.reshape(h, w, 4)[:, :, 3] > 0)


def decode_brush_rle(data: list[int]) -> np.ndarray:
    """Label Studio's brush RLE (thi-ng rle-pack, as in label-studio-converter) -> flat uint8.

    A big-endian bit stream: 32 bits value count, 5 bits word size - 1, four 4-bit run-length
    widths - 1; then blocks of: 1 flag bit, 2 bits choosing a width, `width` bits of length - 1;
    flag 1: one word repeated length times, flag 0: length literal words.
    """
    try:
        bits = np.unpackbits(np.asarray(data, np.uint8))
    except (TypeError, ValueError, OverflowError):
        raise DataError(None, "brush RLE must be a list of byte values 0..255") from None
    pos = 0
    weights = 1 << np.arange(31, -1, -1, dtype=np.int64)

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > bits.size:
            raise DataError(None, "brush RLE ends early (truncated)")
        v = int(bits[pos:pos + n] @ weights[32 - n:]) if n else 0
        pos += n
        return v

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    if word > 8:
        raise DataError(None, f"brush RLE word size {word} bits; RGBA brushes use 8")
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        j = min(num, i + 1 + read(sizes[read(2)]))
        if repeat:
            out[i:j] = read(word)
        else:
            n = j - i
            if pos + n * word > bits.size:
                raise DataError(None, "brush RLE ends early (truncated)")
            chunk = bits[pos:pos + n * word].reshape(n, word)
            out[i:j] = chunk @ weights[32 - word:]
            pos += n * word
        i = j
    return out


# --------------------------------------------------------------------------- writing
_RUN_WIDTHS = (3, 4, 8, 16)   # run-length field widths in bits, as Label Studio's own encoder uses


def encode_brush_rle(values: np.ndarray) -> list[int]:
    """Flat uint8 values -> Label Studio's brush RLE (the format `decode_brush_rle` reads)."""
    flat = np.asarray(values, np.uint8).ravel()
    if not flat.size:
        return _pack_runs(0, [], [])
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    return _pack_runs(flat.size, flat[starts].tolist(), np.diff(np.r_[starts, flat.size]).tolist())


def _pack_runs(count: int, values: list[int], lengths: list[int]) -> list[int]:
    """Every run of equal values as repeat blocks (flag 1) of at most 2**16 values: a brush
    mask's RGBA bytes come in runs of at least 4, so literal blocks would not pay."""
    fields = [f"{count:032b}", f"{7:05b}", "".join(f"{w - 1:04b}" for w in _RUN_WIDTHS)]
    for value, length in zip(values, lengths):
        while length:
            n = min(length, 1 << _RUN_WIDTHS[-1])
            k = next(k for k, w in enumerate(_RUN_WIDTHS) if n <= 1 << w)
            fields.append(f"1{k:02b}{n - 1:0{_RUN_WIDTHS[k]}b}{value:08b}")
            length -= n
    bits = "".join(fields)
    bits += "0" * (-len(bits) % 8)
    return np.packbits(np.frombuffer(bits.encode("ascii"), np.uint8) - ord("0")).tolist()


def brush_rle(mask: np.ndarray, offset: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None) -> list[int]:
    """A bool mask as a brush RLE: the RGBA image Label Studio paints, 255 in all four
    channels inside the mask (the reader takes alpha > 0).

    `mask` may be a crop placed at `offset` (x, y) in an image of `size` (h, w): the runs are
    found inside the crop, so an object costs its box, not the whole image.
    """
    crop = np.asarray(mask, bool)
    h, w = size if size is not None else crop.shape
    x0, y0 = offset
    padded = np.zeros((crop.shape[0], crop.shape[1] + 2), np.int8)
    padded[:, 1:-1] = crop
    d = np.diff(padded, axis=1)
    rows_in, cols_in = np.nonzero(d == 1)
    rows_out, cols_out = np.nonzero(d == -1)
    edges = np.concatenate([(y0 + rows_in) * w + x0 + cols_in, (y0 + rows_out) * w + x0 + cols_out])
    # a run ending at a row's last pixel and one starting at the next row's first pixel are
    # one run of the flat image: their shared edge appears twice and cancels
    points, counts = np.unique(edges, return_counts=True)
    bounds = np.r_[0, points[counts % 2 == 1], h * w]
    lengths = np.diff(bounds) * 4
    values = [0, 255] * (len(lengths) // 2 + 1)
    keep = lengths > 0
    return _pack_runs(h * w * 4, [v for v, k in zip(values, keep) if k], lengths[keep].tolist())


def regions(labels: np.ndarray, label_names: dict[int, str], *, polygons: str | None, brush: str | None,
            to_name: str, confidence: np.ndarray | None = None) -> list[dict]:
    """Label Studio results for a label map, one region per 4-connected object of each class
    in `label_names` (class id -> Label Studio label).

    polygons / brush: the names of the PolygonLabels and BrushLabels controls (either may be
    None). Objects a polygon holds exactly go out as polygons (vertices on pixel corners, in
    percent of the image size); objects with holes as brush masks. Without a brush control,
    an object with holes is sent as its outer outline: the holes are filled, and objects of
    other classes inside them, sent later (regions go out largest first), lie on top. Without
    a polygon control everything is a brush. `confidence` (H, W): each region's `score` is
    its mean over the object's pixels.
    """
    from pixelwise.data.annotations.polygons import objects
    from pixelwise.data.annotations.rasterise import polygons_mask

    if polygons is None and brush is None:
        raise ValueError("need a PolygonLabels or a BrushLabels control")
    h, w = labels.shape
    found = []
    for cls, name in label_names.items():
        mask = labels == cls
        if mask.any():
            found += [(name, obj) for obj in objects(mask)]
    # Work inside each object's box: whole-image masks per object would make a noisy
    # prediction with thousands of fragments cost thousands of full-image passes.
    crops = [(name, obj, obj.mask[obj.bbox[1]:obj.bbox[1] + obj.bbox[3], obj.bbox[0]:obj.bbox[0] + obj.bbox[2]])
             for name, obj in found]
    crops.sort(key=lambda item: -int(item[2].sum()))  # stable: class order within equal areas
    out = []
    for name, obj, crop in crops:
        x, y, bw, bh = obj.bbox
        base = {"id": f"r{len(out) + 1}", "to_name": to_name, "original_width": w, "original_height": h,
                "image_rotation": 0}
        if confidence is not None:
            base["score"] = round(float(confidence[y:y + bh, x:x + bw][crop].mean()), 6)
        exact = len(obj.outlines) == 1 and not obj.holes and np.array_equal(
            polygons_mask([obj.outlines[0] - (x, y)], bh, bw), crop)
        if polygons is not None and (exact or brush is None):
            outline = max(obj.outlines, key=len)
            points = (outline.astype(np.float64) * (100.0 / w, 100.0 / h)).tolist()
            out.append({**base, "from_name": polygons, "type": "polygonlabels",
                        "value": {"points": points, "closed": True, "polygonlabels": [name]}})
        else:
            out.append({**base, "from_name": brush, "type": "brushlabels",
                        "value": {"format": "rle", "rle": brush_rle(crop, (x, y), (h, w)), "brushlabels": [name]}})
    return out
