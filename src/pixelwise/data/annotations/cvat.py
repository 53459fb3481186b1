"""CVAT for images 1.1 XML (docs.cvat.ai, "CVAT for images" export format).

<annotations><meta>...<labels><label><name>car</name>...</labels>...</meta>
<image id name width height [subset]> with <polygon points="x,y;x,y;...">, <box xtl ytl xbr
ybr [rotation]>, <polyline points> (drawn `line_width` pixels wide: the format has no width),
<ellipse cx cy rx ry [rotation]>, <mask rle left top width height> (runs alternate background
and foreground, row by row inside the box, starting with background), <points> (ignored and
counted); every shape has `label` and `z_order`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pixelwise.data.annotations.model import AnnotatedImage, AnnotationSet, ClassMap, Shape
from pixelwise.data.annotations.rasterise import (box_polygon, ellipse_polygon, line_polygons, polygons_mask,
                                                  polygon_shape)
from pixelwise.errors import DataError

_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}


def parse(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(path, f"malformed XML: {exc}") from None
    except OSError as exc:
        raise DataError(path, f"cannot read annotation file: {exc}") from None
    if root.tag != "annotations":
        raise DataError(path, f"not a CVAT for images XML: root element is <{root.tag}>, expected <annotations>")
    return root


def is_cvat(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    return b"<annotations" in head


def label_names(root: ET.Element) -> list[str]:
    names = [el.text or "" for el in root.iterfind("./meta//labels/label/name")]
    used = [el.get("label", "") for image in root.iter("image") for el in image]
    return names + [n for n in used if n not in names]


def read(path: Path, cmap: ClassMap | None, image_roots: list[Path], line_width: float) -> AnnotationSet:
    root = parse(path)
    if cmap is None:
        cmap = ClassMap.from_names(label_names(root), f"{path.name} labels")
    out = AnnotationSet("cvat", path, cmap.table, cmap.fill)
    for image in root.iter("image"):
        iid = image.get("id", "?")
        try:
            ref, w, h = image.get("name") or "", int(image.get("width")), int(image.get("height"))
        except (TypeError, ValueError):
            out.errors.append((f"{path}: image {iid}", "needs name, width and height"))
            continue
        found = out.locate(ref, image_roots, f"{path}: image {iid}")
        if found is None:
            continue
        subset = (image.get("subset") or "").lower()
        img = AnnotatedImage(Path(ref).with_suffix("").as_posix(), found, w, h,
                             split=_SPLIT_NAMES.get(subset), source=str(path))
        out.images.append(img)
        for k, el in enumerate(image):
            where = f"{path}: image {iid} ({ref}), {el.tag} {k}"
            shape = _shape(el, img, where, cmap, line_width, out)
            if shape is not None:
                img.shapes.append(shape)
                out.read += 1
    return out


def _points(text: str | None) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")] for p in (text or "").split(";") if p.strip()],
                    np.float64).reshape(-1, 2)


def _shape(el: ET.Element, img: AnnotatedImage, where: str, cmap: ClassMap, line_width: float,
           out: AnnotationSet) -> Shape | None:
    if el.tag in ("points", "tag", "skeleton", "cuboid"):
        out.skip(where, f"{el.tag} shapes ignored (no area)", el.get("label", ""), error=False)
        return None
    if el.tag not in ("polygon", "box", "polyline", "mask", "ellipse"):
        out.skip(where, "unsupported shape", f"<{el.tag}>", error=False)
        return None
    label = el.get("label", "")
    cid = cmap.lookup(label)
    if cid is None:
        out.skip(where, "unknown category", f"{label!r} is not in {cmap.table.source}")
        return None
    try:
        z = int(float(el.get("z_order", 0)))
        if el.tag == "polygon":
            return polygon_shape(_points(el.get("points")), cid, where, out, z=z)
        if el.tag == "box":
            x0, y0, x1, y1 = (float(el.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
            return Shape(cid, where, polygons=[box_polygon(x0, y0, x1, y1, float(el.get("rotation", 0)))], z=z)
        if el.tag == "polyline":
            pts = _points(el.get("points"))
            if len(pts) < 2:
                out.skip(where, "polyline with fewer than 2 points", f"{len(pts)} point(s)")
                return None
            return Shape(cid, where, polygons=line_polygons(pts, line_width), z=z)
        if el.tag == "ellipse":
            cx, cy, rx, ry = (float(el.get(k)) for k in ("cx", "cy", "rx", "ry"))
            return Shape(cid, where, polygons=[ellipse_polygon(cx, cy, rx, ry, float(el.get("rotation", 0)))], z=z)
        left, top, w, h = (int(float(el.get(k))) for k in ("left", "top", "width", "height"))
        runs = [int(v) for v in (el.get("rle") or "").replace(" ", "").split(",") if v]
    except (TypeError, ValueError) as exc:
        out.skip(where, "malformed shape", f"bad or missing attribute ({exc})")
        return None
    if sum(runs) != w * h or any(r < 0 for r in runs) or w <= 0 or h <= 0:
        out.skip(where, "RLE size mismatch", f"runs sum to {sum(runs)}, the {w}x{h} box holds {w * h} pixels")
        return None
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    bitmap = np.repeat(values, runs).reshape(h, w)
    return Shape(cid, where, bitmap=bitmap, offset=(left, top), z=z)


# --------------------------------------------------------------------------- writing
def mask_element_attrs(mask: np.ndarray, bbox: tuple[int, int, int, int]) -> dict[str, str]:
    """rle/left/top/width/height of a CVAT <mask> for an object's bool mask."""
    x, y, w, h = bbox
    flat = mask[y:y + h, x:x + w].ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"rle": ", ".join(map(str, runs)), "left": str(x), "top": str(y), "width": str(w), "height": str(h)}


def image_element(parent: ET.Element, iid: int, ref: str, labels: np.ndarray, names: list[str], skip: set[int],
                  tolerance: float, subset: str | None) -> None:
    from pixelwise.data.annotations.polygons import objects

    h, w = labels.shape
    attrs = {"id": str(iid), "name": ref, "width": str(w), "height": str(h)}
    if subset:
        attrs["subset"] = subset
    image = ET.SubElement(parent, "image", attrs)
    for cls in np.unique(labels).tolist():
        if cls in skip:
            continue
        label = names[cls] if cls < len(names) else "__ignore__"
        for obj in objects(labels == cls, tolerance):
            base = {"label": label, "source": "manual", "occluded": "0"}
            if len(obj.outlines) == 1 and not obj.holes and (
                    tolerance > 0 or np.array_equal(polygons_mask(obj.outlines, h, w), obj.mask)):
                pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in obj.outlines[0].tolist())
                ET.SubElement(image, "polygon", {**base, "points": pts, "z_order": "0"})
            else:
                ET.SubElement(image, "mask", {**base, **mask_element_attrs(obj.mask, obj.bbox), "z_order": "0"})
