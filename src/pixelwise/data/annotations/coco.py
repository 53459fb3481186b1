"""COCO JSON (instances or stuff): polygons (unioned), compressed and uncompressed RLE,
`iscrowd`, non-contiguous category ids; and writing label maps back as COCO.

Schema (cocodataset.org/#format-data): {"images": [{id, file_name, width, height}],
"annotations": [{id, image_id, category_id, segmentation, area, bbox, iscrowd}],
"categories": [{id, name, supercategory}]}. `segmentation` is a list of flat [x1, y1, x2, y2,
...] polygons or an RLE {"size": [h, w], "counts": str | list}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from pixelwise.data.annotations.model import AnnotatedImage, AnnotationSet, ClassMap, Shape
from pixelwise.data.annotations.rasterise import polygons_mask, self_intersects
from pixelwise.errors import DataError


def is_coco(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" in data \
        and "categories" in data


def read(path: Path, data: dict, cmap: ClassMap | None, image_roots: list[Path], out: AnnotationSet | None,
         split: str | None = None) -> AnnotationSet:
    """Add the images and annotations of one COCO file to `out` (created when None)."""
    cats = data.get("categories") or []
    try:
        cat_names = {int(c["id"]): str(c["name"]) for c in cats}
    except (KeyError, TypeError, ValueError):
        raise DataError(path, "every category needs an integer 'id' and a 'name'") from None
    if cmap is None:
        cmap = ClassMap.from_names([cat_names[k] for k in sorted(cat_names)], f"{path.name} categories")
    if out is None:
        out = AnnotationSet("coco", path, cmap.table, cmap.fill)
    by_id: dict[int, AnnotatedImage] = {}
    for entry in data["images"]:
        try:
            iid, ref, w, h = int(entry["id"]), str(entry["file_name"]), int(entry["width"]), int(entry["height"])
        except (KeyError, TypeError, ValueError):
            out.errors.append((str(path), f"image entry {entry!r:.80} needs id, file_name, width and height"))
            continue
        found = out.locate(ref, image_roots, f"{path}: image {iid}")
        if found is None:
            continue
        name = Path(ref).with_suffix("").as_posix()
        img = AnnotatedImage(name, found, w, h, split=split, source=str(path))
        by_id[iid] = img
        out.images.append(img)
    for ann in data.get("annotations") or []:
        aid = ann.get("id", "?") if isinstance(ann, dict) else "?"
        where = f"{path}: annotation {aid}"
        if not isinstance(ann, dict):
            out.skip(where, "malformed annotation", "not an object")
            continue
        img = by_id.get(ann.get("image_id"))
        if img is None:
            out.skip(where, "image missing", f"image_id {ann.get('image_id')!r} has no readable image")
            continue
        name = cat_names.get(ann.get("category_id"))
        cid = None if name is None else cmap.lookup(name)
        if cid is None:
            out.skip(where, "unknown category", f"category_id {ann.get('category_id')!r}"
                     + (f" ({name!r} is not in {cmap.table.source})" if name else ""))
            continue
        shape = _shape(ann.get("segmentation"), cid, img, where, out)
        if shape is not None:
            img.shapes.append(shape)
            out.read += 1
    return out


def _shape(seg: Any, cid: int, img: AnnotatedImage, where: str, out: AnnotationSet) -> Shape | None:
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(counts, (str, list)) or not isinstance(size, list) or len(size) != 2:
            out.skip(where, "malformed RLE", "needs 'size' [h, w] and 'counts'")
            return None
        if [int(size[0]), int(size[1])] != [img.height, img.width]:
            out.skip(where, "RLE size mismatch", f"RLE is {size[1]}x{size[0]} but the image is "
                     f"{img.width}x{img.height} (WxH)")
            return None
        if isinstance(counts, list) and sum(int(c) for c in counts) != img.height * img.width:
            out.skip(where, "RLE size mismatch", f"counts sum to {sum(counts)}, not {img.height * img.width} pixels")
            return None
        return Shape(cid, where, rle={"size": size, "counts": counts})
    if not isinstance(seg, list) or not seg:
        out.skip(where, "no segmentation", "empty or missing 'segmentation'")
        return None
    polys = []
    for k, flat in enumerate(seg):
        if not isinstance(flat, list) or len(flat) % 2 or not all(isinstance(v, (int, float)) for v in flat):
            out.skip(where, "malformed polygon", f"polygon {k} is not a flat list of x, y numbers")
            return None
        if len(flat) < 6:
            out.skip(where, "polygon with fewer than 3 points", f"polygon {k} has {len(flat) // 2}")
            return None
        poly = np.asarray(flat, np.float64).reshape(-1, 2)
        if self_intersects(poly):
            out.warnings.append((where, f"polygon {k} crosses itself: filled even-odd"))
        polys.append(poly)
    return Shape(cid, where, polygons=polys)


# --------------------------------------------------------------------------- writing
def annotations_for(labels: np.ndarray, image_id: int, first_id: int, categories: dict[int, int],
                    tolerance: float) -> list[dict]:
    """COCO annotations for one label map: one per 4-connected object of each class in
    `categories` (class id -> category id). Objects with holes, or whose traced polygon does
    not give back the same pixels, are written as compressed RLE; the rest as polygons."""
    from pixelwise.data.annotations.polygons import objects

    h, w = labels.shape
    out = []
    for cls, cat in categories.items():
        mask = labels == cls
        if not mask.any():
            continue
        for obj in objects(mask, tolerance):
            polys = obj.outlines
            exact = not obj.holes and (tolerance > 0 or np.array_equal(polygons_mask(polys, h, w), obj.mask))
            rle = coco_mask.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
            ann = {"id": first_id + len(out), "image_id": image_id, "category_id": cat, "iscrowd": 0,
                   "area": int(obj.mask.sum()), "bbox": [float(v) for v in obj.bbox]}
            if exact:
                ann["segmentation"] = [p.astype(float).ravel().tolist() for p in polys]
            else:
                ann["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
            out.append(ann)
    return out
