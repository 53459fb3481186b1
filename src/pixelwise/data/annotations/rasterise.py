"""One rasteriser for every format: polygons and RLE go through pycocotools.

Coordinates are continuous, pixel (col i, row j) covering [i, i+1) x [j, j+1), so a polygon
tracing a pixel-aligned square on integer corners gives exactly that square (pycocotools'
own convention, checked in tests). Lines, circles, boxes and ellipses become polygons first;
bitmaps (CVAT masks, LabelMe masks, Label Studio brushes) are pasted. Shapes are drawn in
order of `z`, ties in file order, later on top; anything outside the image is clipped.
"""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as coco_mask

from pixelwise.data.annotations.model import AnnotatedImage, Shape


def polygons_mask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Union of polygons (each (N, 2), N >= 3) as a bool (H, W) mask; even-odd inside each."""
    if not polygons:
        return np.zeros((height, width), bool)
    flat = [np.asarray(p, np.float64).ravel().tolist() for p in polygons]
    # a 4-number list would be read as a bbox by frPyObjects: callers guarantee >= 3 points
    rles = coco_mask.frPyObjects(flat, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def rle_mask(rle: dict, height: int, width: int) -> np.ndarray:
    """A COCO RLE (compressed string or uncompressed list counts) as a bool (H, W) mask."""
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = coco_mask.frPyObjects(rle, height, width)
    elif isinstance(counts, str):
        rle = {"size": [height, width], "counts": counts.encode("ascii")}
    return coco_mask.decode(rle).astype(bool)


def shape_mask(shape: Shape, height: int, width: int) -> np.ndarray:
    if shape.polygons is not None:
        return polygons_mask(shape.polygons, height, width)
    if shape.rle is not None:
        return rle_mask(shape.rle, height, width)
    out = np.zeros((height, width), bool)
    bm, (x, y) = shape.bitmap, shape.offset
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + bm.shape[1], width), min(y + bm.shape[0], height)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = bm[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def render(image: AnnotatedImage, fill: int) -> np.ndarray:
    """The label map of one image: `fill` where nothing is drawn, later shapes on top."""
    dtype = np.uint8 if max([fill] + [s.class_id for s in image.shapes]) <= 255 else np.uint16
    out = np.full((image.height, image.width), fill, dtype)
    for shape in sorted(image.shapes, key=lambda s: s.z):  # sorted() is stable: file order within a z
        out[shape_mask(shape, image.height, image.width)] = shape.class_id
    return out


# --------------------------------------------------------------------------- shapes as polygons
def box_polygon(x0: float, y0: float, x1: float, y1: float, rotation_deg: float = 0.0,
                pivot: tuple[float, float] | None = None) -> np.ndarray:
    """Corners of a box, rotated clockwise (image y points down) about `pivot` (its centre)."""
    pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    if rotation_deg:
        c = pivot if pivot is not None else ((x0 + x1) / 2, (y0 + y1) / 2)
        pts = _rotate(pts, rotation_deg, c)
    return pts


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, rotation_deg: float = 0.0) -> np.ndarray:
    """An ellipse as a polygon with about one vertex per pixel of perimeter (at least 16).

    Vertices sit on the ellipse, so the polygon lies inside it by at most r(1 - cos(pi/n)),
    under 1/8 pixel at this density."""
    n = max(16, int(math.ceil(2 * math.pi * max(rx, ry))))
    t = np.arange(n) * (2 * math.pi / n)
    pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
    return _rotate(pts, rotation_deg, (cx, cy)) if rotation_deg else pts


def line_polygons(points: np.ndarray, width: float) -> list[np.ndarray]:
    """A polyline `width` pixels wide: one rectangle per segment and a disc at each vertex
    (round joins and caps), to be unioned."""
    points = np.asarray(points, np.float64)
    half = width / 2
    out = [ellipse_polygon(x, y, half, half) for x, y in points]
    for a, b in zip(points[:-1], points[1:]):
        d = b - a
        length = float(np.hypot(*d))
        if length == 0:
            continue
        nrm = np.array([-d[1], d[0]]) / length * half
        out.append(np.array([a + nrm, b + nrm, b - nrm, a - nrm]))
    return out


def _rotate(pts: np.ndarray, deg: float, centre: tuple[float, float]) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    p = pts - centre
    return np.stack([p[:, 0] * c - p[:, 1] * s, p[:, 0] * s + p[:, 1] * c], 1) + centre


# --------------------------------------------------------------------------- checks
def polygon_shape(pts: np.ndarray, class_id: int, where: str, out, z: int = 0) -> Shape | None:
    """One polygon annotation as a Shape: fewer than 3 points is skipped, a self-crossing one
    kept (filled even-odd) with a warning; `out` is the AnnotationSet that records both."""
    if len(pts) < 3:
        out.skip(where, "polygon with fewer than 3 points", f"{len(pts)} point(s)")
        return None
    if self_intersects(pts):
        out.warnings.append((where, "polygon crosses itself: filled even-odd"))
    return Shape(class_id, where, polygons=[pts], z=z)


def self_intersects(poly: np.ndarray) -> bool:
    """True if two non-adjacent edges of the closed polygon cross properly (touching at a
    vertex, as traced pixel outlines do at diagonal pinches, does not count)."""
    p = np.asarray(poly, np.float64)
    n = len(p)
    if n < 4:
        return False
    a, b = p, np.roll(p, -1, axis=0)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    idx = np.arange(n)
    block = max(1, 4_000_000 // n)
    for start in range(0, n, block):
        i = idx[start:start + block, None]
        # bounding boxes overlap, and edges are neither the same nor neighbours
        cand = ((lo[i, 0] <= hi[None, :, 0]) & (lo[None, :, 0] <= hi[i, 0]) &
                (lo[i, 1] <= hi[None, :, 1]) & (lo[None, :, 1] <= hi[i, 1]) & (idx[None, :] > i + 1))
        cand[(i == 0) & (idx[None, :] == n - 1)] = False
        ii, jj = np.nonzero(cand)
        if not len(ii):
            continue
        ii = ii + start
        a1, b1, a2, b2 = a[ii], b[ii], a[jj], b[jj]
        d1 = _cross(a2, b2, a1)
        d2 = _cross(a2, b2, b1)
        d3 = _cross(a1, b1, a2)
        d4 = _cross(a1, b1, b2)
        if np.any((d1 * d2 < 0) & (d3 * d4 < 0)):
            return True
    return False


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[:, 0] - o[:, 0]) * (b[:, 1] - o[:, 1]) - (a[:, 1] - o[:, 1]) * (b[:, 0] - o[:, 0])
