"""`pixelwise data convert`: any layout to masks, COCO, LabelMe or CVAT.

--to masks writes the folder layout (images/<split>/, masks/<split>/ as palette PNGs,
classes.json). --to coco|labelme|cvat traces every 4-connected object of every class into a
polygon with vertices on pixel corners (exact at tolerance 0), simplified by `tolerance`
pixels when asked; objects the format's polygons cannot hold (holes) are written as COCO RLE,
a CVAT mask or a LabelMe mask. Uncovered pixels of the source (the class named background,
else ignored pixels) are left unannotated; classes.json beside the output says which.
Images are hard-linked (copied across file systems) next to the annotations. Every file is
written atomically, so an interrupted run leaves whole files only.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from pixelwise.data.annotations.model import fill_class
from pixelwise.data.classes import ClassTable
from pixelwise import atomic
from pixelwise.errors import ConfigError, DataError

FORMATS = ("masks", "coco", "labelme", "cvat")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` through the one atomic writer (the writers here want a file name)."""
    with atomic.atomic_path(path) as tmp:
        write(tmp)


def _write_json(path: Path, data) -> None:
    _atomic(path, lambda t: t.write_text(json.dumps(data), encoding="utf-8"))


def _classes_json(classes: ClassTable) -> dict:
    return {"classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in
                        enumerate(zip(classes.names, classes.colors))],
            "ignore_index": classes.ignore_index, "task": classes.task}


def with_options(src: str | Path, **options) -> str:
    """`src` with annotation options as a query string ('ann.json?line_width=3')."""
    from urllib.parse import urlencode

    given = {k: v for k, v in options.items() if v is not None}
    return f"{src}?{urlencode(given)}" if given else str(src)


def convert(src: str | Path, to: str, out: str | Path, tolerance: float = 0.0,
            progress: Callable[[str], None] | None = None) -> dict:
    """Convert the data at `src` (any layout, options in the spec) into `out`; returns counts."""
    from pixelwise.data.dataset import SegmentationDataset
    from pixelwise.data.layouts import scan_layout

    if to not in FORMATS:
        raise ConfigError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    if tolerance < 0:
        raise ConfigError(f"--tolerance must be >= 0 pixels, got {tolerance}")
    layout = scan_layout(src)
    if layout.encoding == "multilabel":
        raise DataError(layout.root, "multilabel data (one mask per class) cannot be converted: "
                                     "conversion writes one label per pixel")
    out = Path(out)
    classes = layout.classes
    fill = fill_class(classes)
    counts = {"images": 0, "annotations": 0, "format": to, "out": str(out)}
    names = list(classes.names)
    cats = {c: c + 1 for c in range(classes.num_classes) if c != fill}  # category ids 1..C
    ignore_cat = classes.num_classes + 1
    if fill != classes.ignore_index:
        cats[classes.ignore_index] = ignore_cat
    cvat_root = ET.Element("annotations")
    ET.SubElement(cvat_root, "version").text = "1.1"
    labels_el = ET.SubElement(ET.SubElement(ET.SubElement(cvat_root, "meta"), "task"), "labels")
    for c in range(classes.num_classes):
        if c != fill:
            ET.SubElement(ET.SubElement(labels_el, "label"), "name").text = names[c]
    _atomic(out / "classes.json", lambda t: t.write_text(json.dumps(_classes_json(classes), indent=1)))
    for split, samples in layout.splits.items():
        if not samples:
            continue  # an empty split (e.g. of the hash split) would only be an empty file
        ds = SegmentationDataset(samples, classes, None, None, encoding=layout.encoding, name=str(src), split=split)
        images, anns = [], []
        for i, sample in enumerate(samples):
            labels = ds.read_mask(i)
            h, w = labels.shape[:2]
            ext = sample.image_path.suffix.lower()
            rel = f"{split}/{sample.name}{ext}"
            if to == "masks":
                atomic.place_file(sample.image_path, out / "images" / rel)
                _atomic(out / "masks" / split / f"{sample.name}.png", lambda t: _save_labels(t, labels, classes))
            elif to == "coco":
                from pixelwise.data.annotations.coco import annotations_for

                atomic.place_file(sample.image_path, out / "images" / rel)
                images.append({"id": i + 1, "file_name": rel, "width": w, "height": h})
                anns += annotations_for(labels, i + 1, len(anns) + 1, cats, tolerance)
            elif to == "labelme":
                from pixelwise.data.annotations.labelme import shapes_for

                dst = out / split / f"{sample.name}{ext}"
                atomic.place_file(sample.image_path, dst)
                shapes = shapes_for(labels, names, {fill}, tolerance)
                counts["annotations"] += len(shapes)
                _write_json(dst.with_suffix(".json"), {
                    "version": "5.3.1", "flags": {}, "shapes": shapes, "imagePath": dst.name, "imageData": None,
                    "imageHeight": h, "imageWidth": w})
            else:
                from pixelwise.data.annotations.cvat import image_element

                atomic.place_file(sample.image_path, out / "images" / rel)
                image_element(cvat_root, counts["images"], rel, labels, names, {fill}, tolerance, split)
            counts["images"] += 1
            if progress and counts["images"] % 50 == 0:
                progress(f"{counts['images']} images converted")
        if to == "coco":
            categories = [{"id": cid, "name": names[c] if c < len(names) else "__ignore__", "supercategory": ""}
                          for c, cid in sorted(cats.items(), key=lambda kv: kv[1])]
            counts["annotations"] += len(anns)
            _write_json(out / "annotations" / f"{split}.json", {
                "info": {"description": f"converted by pixelwise from {src}"}, "images": images,
                "annotations": anns, "categories": categories})
    if to == "cvat":
        counts["annotations"] = sum(len(img) for img in cvat_root.iter("image"))
        ET.indent(cvat_root)
        _atomic(out / "annotations.xml", lambda t: ET.ElementTree(cvat_root).write(t, encoding="utf-8",
                                                                                  xml_declaration=True))
    return counts


def _save_labels(path: Path, labels: np.ndarray, classes: ClassTable) -> None:
    if labels.max(initial=0) > 255:
        Image.fromarray(labels.astype(np.uint16)).save(path, format="PNG")
        return
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    for i, c in enumerate(classes.colors[:256]):
        palette[i] = c
    img.putpalette(palette.ravel().tolist())
    img.save(path, format="PNG")
