"""LabelMe JSON: one file per image, next to it (github.com/wkentaro/labelme).

{"version", "shapes": [{"label", "points": [[x, y], ...], "shape_type", "group_id", "mask"?}],
"imagePath", "imageData", "imageHeight", "imageWidth"}. shape_type: polygon, rectangle
(2 corners), circle (centre, a point on the circle), line, linestrip (drawn `line_width`
pixels wide), point/points (no area: ignored and counted), mask (a base64 PNG placed at the
first point; labelme >= 5.3).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from pixelwise.data.annotations.model import AnnotatedImage, AnnotationSet, Shape, find_image
from pixelwise.data.annotations.rasterise import ellipse_polygon, line_polygons, polygon_shape

LABELME_KEYS = ("shapes", "imagePath")


def is_labelme(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and "imagePath" in data


def labels_in(data: dict) -> list[str]:
    return [str(s.get("label")) for s in data.get("shapes", []) if isinstance(s, dict)
            and s.get("shape_type", "polygon") not in ("point", "points")]


def read_file(path: Path, data: dict, name: str, out: AnnotationSet, cmap, image_roots: list[Path],
              line_width: float, split: str | None) -> None:
    ref = str(data.get("imagePath") or "")
    found = find_image(ref, [path.parent] + image_roots) if ref else None
    if found is None:
        for ext in (".jpg", ".png", ".jpeg", ".bmp", ".tif"):
            if path.with_suffix(ext).is_file():
                found = path.with_suffix(ext)
                break
    if found is None:
        out.errors.append((str(path), f"image {ref!r} is referenced but missing (embedded imageData is not read: "
                                      "keep the image file next to the JSON)"))
        return
    try:
        w, h = int(data["imageWidth"]), int(data["imageHeight"])
    except (KeyError, TypeError, ValueError):
        out.errors.append((str(path), "imageWidth and imageHeight are missing or not integers"))
        return
    img = AnnotatedImage(name, found, w, h, split=split, source=str(path))
    out.images.append(img)
    for k, s in enumerate(data["shapes"]):
        where = f"{path}: shape {k}"
        if not isinstance(s, dict):
            out.skip(where, "malformed shape", "not an object")
            continue
        kind = s.get("shape_type") or "polygon"
        label = str(s.get("label"))
        if kind in ("point", "points"):
            out.skip(where, "point shapes ignored (no area)", label, error=False)
            continue
        try:
            pts = np.asarray(s.get("points") or [], np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            out.skip(where, "malformed shape", "points are not [x, y] pairs")
            continue
        cid = cmap.lookup(label)
        if cid is None:
            out.skip(where, "unknown category", f"{label!r} is not in {cmap.table.source}")
            continue
        shape = _shape(kind, pts, s, cid, where, line_width, out)
        if shape is not None:
            img.shapes.append(shape)
            out.read += 1


def _shape(kind: str, pts: np.ndarray, s: dict, cid: int, where: str, line_width: float,
           out: AnnotationSet) -> Shape | None:
    if kind == "polygon":
        return polygon_shape(pts, cid, where, out)
    if kind == "rectangle" and len(pts) == 2:
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        return Shape(cid, where, polygons=[np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])])
    if kind == "circle" and len(pts) == 2:
        r = float(np.hypot(*(pts[1] - pts[0])))
        return Shape(cid, where, polygons=[ellipse_polygon(pts[0][0], pts[0][1], r, r)])
    if kind in ("line", "linestrip") and len(pts) >= 2:
        return Shape(cid, where, polygons=line_polygons(pts, line_width))
    if kind == "mask" and s.get("mask") and len(pts) >= 1:
        try:
            from PIL import Image

            bitmap = np.asarray(Image.open(io.BytesIO(base64.b64decode(s["mask"])))) > 0
        except Exception as exc:  # a corrupt base64 or PNG: name it, keep going
            out.skip(where, "malformed mask", f"{type(exc).__name__}: {exc}")
            return None
        if bitmap.ndim == 3:
            bitmap = bitmap.any(axis=2)
        return Shape(cid, where, bitmap=bitmap, offset=(int(pts[0][0]), int(pts[0][1])))
    out.skip(where, "unsupported shape", f"shape_type {kind!r} with {len(pts)} point(s)")
    return None


def shapes_for(labels: np.ndarray, names: list[str], skip: set[int], tolerance: float) -> list[dict]:
    """LabelMe shapes for a label map: a polygon per hole-free object, a mask shape otherwise."""
    from PIL import Image

    from pixelwise.data.annotations.polygons import objects
    from pixelwise.data.annotations.rasterise import polygons_mask

    h, w = labels.shape
    shapes = []
    for cls in np.unique(labels).tolist():
        if cls in skip:
            continue
        label = names[cls] if cls < len(names) else "__ignore__"
        for obj in objects(labels == cls, tolerance):
            if len(obj.outlines) == 1 and not obj.holes and (
                    tolerance > 0 or np.array_equal(polygons_mask(obj.outlines, h, w), obj.mask)):
                shapes.append({"label": label, "points": obj.outlines[0].astype(float).tolist(), "group_id": None,
                               "description": "", "shape_type": "polygon", "flags": {}, "mask": None})
                continue
            x, y, bw, bh = obj.bbox
            buf = io.BytesIO()
            Image.fromarray(obj.mask[y:y + bh, x:x + bw]).save(buf, format="PNG")
            shapes.append({"label": label, "points": [[float(x), float(y)], [float(x + bw - 1), float(y + bh - 1)]],
                           "group_id": None, "description": "", "shape_type": "mask", "flags": {},
                           "mask": base64.b64encode(buf.getvalue()).decode("ascii")})
    return shapes
