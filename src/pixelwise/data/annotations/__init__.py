"""Annotation exports as data layouts: LabelMe, COCO, CVAT for images 1.1, Label Studio.

`scan_annotation_layout(spec)` recognises an annotation file or folder and returns a
`Layout` whose samples draw their masks from the annotations (`AnnotationMask`), so every
command that takes a data folder takes these too. Options ride on the spec as a query
string: `coco.json?images=/photos&labels=labels.txt&line_width=5`.

Where images are looked for: `images=ROOT`, then next to the annotation file and in an
`images/` folder beside it (or one level up). Splits: COCO files named *train*/*val*/*test*,
CVAT `subset`, LabelMe split folders; otherwise split lists or the stable hash split.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from pixelwise.data.annotations import coco, cvat, labelme, labelstudio
from pixelwise.data.annotations.model import (AnnotatedImage, AnnotationSet, ClassMap, find_labels_file,
                                              load_json)
from pixelwise.data.annotations.rasterise import render
from pixelwise.errors import ConfigError, DataError

OPTIONS = {"images": str, "labels": str, "line_width": float}
_SPLIT_WORDS = (("train", "train"), ("val", "val"), ("test", "test"))
_MASK_DIRS = ("masks", "labels", "mask", "label")
_cache: dict[tuple, AnnotationSet] = {}


@dataclass(frozen=True, eq=False)
class AnnotationMask:
    """Stands where a mask path would: `pixelwise.data.masks.read_mask` renders it."""

    image: AnnotatedImage
    fill: int

    def render_mask(self) -> np.ndarray:
        return render(self.image, self.fill)

    def __fspath__(self) -> str:
        return f"{self.image.source}#{self.image.name}"

    def __str__(self) -> str:
        return self.__fspath__()


def split_spec(spec: str | Path) -> tuple[Path, dict]:
    """'ann.json?line_width=3' -> (Path('ann.json'), {'line_width': 3.0})."""
    text = os.fspath(spec)
    path, options = Path(text), {}
    if "?" in text and not path.exists():
        base, _, query = text.partition("?")
        path = Path(base)
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in OPTIONS:
                raise ConfigError(f"{base}: annotation option {key!r} is not known; accepted: {', '.join(OPTIONS)}")
            try:
                options[key] = OPTIONS[key](value)
            except ValueError:
                raise ConfigError(f"{base}: option {key}={value!r} must be a number") from None
    return path.expanduser(), options


def detect(path: Path) -> tuple[str, list[Path]] | None:
    """(format, annotation files) if `path` is an annotation file or folder, else None."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".xml":
            return "cvat", [path]
        if suffix == ".json":
            data = load_json(path)
            for kind, test in (("coco", coco.is_coco), ("labelstudio", labelstudio.is_labelstudio),
                               ("labelme", labelme.is_labelme)):
                if test(data):
                    return kind, [path]
            raise DataError(path, "JSON is not a COCO, LabelMe or Label Studio export (no images/annotations/"
                                  "categories, no shapes/imagePath, not a list of tasks)")
        return None
    if not path.is_dir():
        return None
    if any((path / d).is_dir() for d in _MASK_DIRS) or (path / "JPEGImages").is_dir() \
            or (path / "leftImg8bit").is_dir():
        return None  # a mask layout
    folders = [path, path / "annotations"]
    xmls = [f for d in folders if d.is_dir() for f in sorted(d.glob("*.xml")) if cvat.is_cvat(f)]
    if xmls:
        return "cvat", xmls[:1]
    jsons = [f for d in folders if d.is_dir() for f in sorted(d.glob("*.json"))
             if f.name not in ("classes.json", "stats.json")]
    cocos = []
    for f in jsons:
        data = load_json(f)
        if coco.is_coco(data):
            cocos.append(f)
        elif labelstudio.is_labelstudio(data):
            return "labelstudio", [f]
        elif labelme.is_labelme(data):
            return "labelme", sorted(p for p in path.rglob("*.json") if p.name not in ("classes.json", "stats.json"))
    if cocos:
        return "coco", cocos
    for sub in sorted(path.iterdir()):  # LabelMe in split folders only
        if sub.is_dir() and next(sub.glob("*.json"), None) is not None:
            first = next(sub.glob("*.json"))
            if labelme.is_labelme(load_json(first)):
                return "labelme", sorted(p for p in path.rglob("*.json") if p.name not in ("classes.json",))
    return None


def load(path: Path, kind: str, files: list[Path], images: str | None = None, labels: str | None = None,
         line_width: float = 1.0) -> AnnotationSet:
    """Read an export into an `AnnotationSet` (cached while the files are unchanged)."""
    key = (str(path.resolve()), kind, images, labels, line_width,
           tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files))
    if key in _cache:
        return _cache[key]
    base = path if path.is_dir() else path.parent
    roots = ([Path(images).expanduser()] if images else []) + [base, base / "images", base.parent,
                                                               base.parent / "images"]
    label_file = Path(labels).expanduser() if labels else find_labels_file(base, base.parent)
    if labels and not label_file.is_file():
        raise DataError(label_file, "labels file does not exist")
    cmap = ClassMap.from_file(label_file) if label_file else None
    if kind == "coco":
        out = None
        parsed = [(f, load_json(f)) for f in files]
        if cmap is None and len(parsed) > 1:  # one class table for all split files: the union of their categories
            cats = {}
            for _, data in parsed:
                cats.update({c.get("id"): str(c.get("name")) for c in data.get("categories") or []
                             if isinstance(c, dict)})
            cmap = ClassMap.from_names([cats[k] for k in sorted(cats, key=_id_order)], "COCO categories")
        for f, data in parsed:
            split = next((s for word, s in _SPLIT_WORDS if word in f.stem.lower()), None)
            out = coco.read(f, data, cmap, [f.parent, f.parent / "images", f.parent.parent / "images"]
                            + roots, out, split)
    elif kind == "cvat":
        out = cvat.read(files[0], cmap, roots, line_width)
    elif kind == "labelstudio":
        out = labelstudio.read(files[0], load_json(files[0]), cmap, roots)
    else:
        out = _read_labelme(path, files, cmap, roots, line_width)
    if out.skipped or out.errors:
        warnings.warn(f"{path}: {out.summary()}; {len(out.errors)} problem(s): run `pixelwise data check {path}` "
                      "for the list", stacklevel=3)
    _cache[key] = out
    return out


def _read_labelme(path: Path, files: list[Path], cmap: ClassMap | None, roots: list[Path],
                  line_width: float) -> AnnotationSet:
    loaded = [(f, load_json(f)) for f in files]
    loaded = [(f, d) for f, d in loaded if labelme.is_labelme(d)]
    if cmap is None:
        names = sorted({n for _, d in loaded for n in labelme.labels_in(d)})
        cmap = ClassMap.from_names(names, "LabelMe labels")
    out = AnnotationSet("labelme", path, cmap.table, cmap.fill)
    base = path if path.is_dir() else path.parent
    for f, data in loaded:
        rel = f.relative_to(base).with_suffix("")
        first = rel.parts[0].lower() if len(rel.parts) > 1 else ""
        split = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}.get(first)
        name = Path(*rel.parts[1:]).as_posix() if split else rel.as_posix()
        labelme.read_file(f, data, name, out, cmap, roots, line_width, split)
    return out


def scan_annotation_layout(spec: str | Path):
    """A `Layout` for an annotation export, or None when `spec` is not one."""
    from pixelwise.data.layouts import Layout, Sample, _apply_split_lists

    path, options = split_spec(spec)
    found = detect(path) if path.exists() else None
    if found is None:
        if options:
            raise DataError(path, "annotation options given, but this is not an annotation file or folder")
        return None
    kind, files = found
    aset = load(path, kind, files, **options)
    base = path if path.is_dir() else path.parent
    layout = Layout(path, kind, aset.classes, "index", {})
    layout.problems.extend(_located(where, problem) for where, problem in aset.errors)
    layout.warnings.extend(_located(where, problem) for where, problem in aset.warnings)
    layout.notes.append(aset.summary())
    layout.notes.append(f"classes: {aset.classes.source}; uncovered pixels are "
                        + (f"class {aset.fill} ({aset.classes.names[aset.fill]})"
                           if aset.fill < aset.classes.num_classes else f"ignored ({aset.fill})"))
    seen: dict[str, Path] = {}
    samples: dict[str | None, list] = {}
    for img in aset.images:
        if img.split and img.name.startswith(f"{img.split}/"):
            img.name = img.name[len(img.split) + 1:]  # "train/a.png" in a train file is sample "a"
        if img.name in seen and seen[img.name] != img.image_path:
            layout.problems.append((img.image_path, f"two images named {img.name!r}: {seen[img.name]} and "
                                                    f"{img.image_path}"))
            continue
        seen[img.name] = img.image_path
        samples.setdefault(img.split, []).append(Sample(img.name, img.image_path, AnnotationMask(img, aset.fill)))
    if set(samples) - {None}:
        for split, items in samples.items():
            layout.splits[split or "train"] = layout.splits.get(split or "train", []) + items
            layout.declared_splits.add(split or "train")
    else:
        layout.splits["all"] = samples.get(None, [])
        _apply_split_lists(base, layout)
    return layout


def _located(where: str, problem: str) -> tuple[Path, str]:
    """'/x/a.json: annotation 3' + problem -> (Path('/x/a.json'), 'annotation 3: problem')."""
    file, _, inside = where.partition(": ")
    return Path(file), f"{inside}: {problem}" if inside else problem


def _id_order(cid) -> tuple[int, str]:
    """Category ids in numeric order; anything not an integer after them."""
    try:
        return int(cid), ""
    except (TypeError, ValueError):
        return 1 << 62, str(cid)
