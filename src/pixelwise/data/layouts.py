"""Finding images, masks, splits and classes in the folder layouts pixelwise reads natively.

- folder pairs: `images/` + `masks/` matched by file stem, with or without split subfolders
  (`train/`, `val/`, `test/`) or split lists (`splits/train.txt` or `train.txt`);
  multilabel as one folder of binary masks per class, or one .npy/.tif array per image
- Pascal VOC: `JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/*.txt`
- Cityscapes: `leftImg8bit/`, `gtFine/` (labelIds mapped to the 19 train ids)
- CamVid (SegNet tutorial): `train/`, `trainannot/`, `val/`, `valannot/`, `test/`, `testannot/`

`scan_layout(root)` returns a `Layout`: samples per split, the class table, and everything
odd found on the way (orphans, duplicates), which `data check` reports.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelwise.data.classes import (ClassTable, default_colors, find_class_file, infer_classes,
                                    load_class_table)
from pixelwise.data.io import ARRAY_EXTS, IMAGE_EXTS, MASK_EXTS, is_image_name
from pixelwise.data.masks import class_pixel_counts, is_colour_mask, pack_rgb, read_mask, squeeze_grey, unpack_rgb
from pixelwise.errors import DataError

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_gt", "_seg", "_annot")
MaskRef = Path | tuple[Path, ...] | None


@dataclass(frozen=True)
class Sample:
    """One image and its mask: a path, a tuple of per-class paths (multilabel), or None.
    Synthetic samples have no files: both paths are None."""

    name: str
    image_path: Path | None
    mask_path: MaskRef


@dataclass
class Layout:
    root: Path
    kind: str                                   # "folder", "voc", "cityscapes", "camvid-segnet", "coco", ...
    classes: ClassTable
    encoding: str                               # "index", "rgb", "multilabel"
    splits: dict[str, list[Sample]]
    declared_splits: set[str] = field(default_factory=set)   # splits with a folder or list file
    orphan_images: list[Path] = field(default_factory=list)  # images without masks
    orphan_masks: list[Path] = field(default_factory=list)   # masks without images
    problems: list[tuple[Path | None, str]] = field(default_factory=list)
    warnings: list[tuple[Path | None, str]] = field(default_factory=list)   # kept, with a caveat
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        name = _SPLIT_ALIASES.get(name, name)
        if name == "all" and "all" not in self.splits:
            return [s for samples in self.splits.values() for s in samples]
        if name not in self.splits:
            raise DataError(self.root, f"no split {name!r}; available: {', '.join(sorted(self.splits)) or 'none'}")
        return self.splits[name]


# --------------------------------------------------------------------------- listing helpers
def _list_files(folder: Path, exts: tuple[str, ...], recursive: bool = True) -> list[Path]:
    """Files with the given extensions, sorted. Broken links and symlink loops are kept, so
    reading them later produces a DataError naming the file instead of a silent skip."""
    out: list[Path] = []
    if not folder.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        if not recursive:
            dirnames.clear()
        base = Path(dirpath)
        out.extend(base / f for f in filenames if is_image_name(f, exts))
        # os.walk lists a looping or broken symlink among dirnames only if it resolves to a dir
        for d in list(dirnames):
            if (base / d).is_symlink() and is_image_name(d, exts):
                out.append(base / d)
                dirnames.remove(d)
    return sorted(out)


def _key(path: Path, base: Path) -> str:
    """Relative path without extension: the pairing key."""
    rel = path.relative_to(base).with_suffix("")
    return rel.as_posix()


def _strip_mask_suffix(key: str) -> str:
    for suffix in _MASK_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def _pair(images: list[Path], image_base: Path, masks: list[Path], mask_base: Path, layout: Layout,
          prefix: str = "") -> list[Sample]:
    """Match images and masks by relative stem; unmatched ones become orphans."""
    by_key: dict[str, Path] = {}
    for m in masks:
        k = _key(m, mask_base)
        for cand in (k, _strip_mask_suffix(k)):
            if cand in by_key and by_key[cand] != m:
                layout.problems.append((m, f"two masks for one image: {by_key[cand].name} and {m.name}"))
            by_key.setdefault(cand, m)
    used: set[Path] = set()
    samples: list[Sample] = []
    seen: dict[str, Path] = {}
    for img in images:
        k = _key(img, image_base)
        if k in seen:
            layout.problems.append((img, f"two images with the same name: {seen[k].name} and {img.name}"))
            continue
        seen[k] = img
        m = by_key.get(k)
        if m is None:
            layout.orphan_images.append(img)
            continue
        used.add(m)
        samples.append(Sample(prefix + k, img, m))
    layout.orphan_masks.extend(m for m in masks if m not in used)
    return samples


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read split list: {exc}") from None
    out = []
    for line in lines:
        line = line.strip().split()[0] if line.strip() else ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _hash_split(name: str) -> str:
    """Stable 80/10/10 split from the name, unchanged when other files are added."""
    h = int(hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest(), 16) % 10
    return "train" if h < 8 else ("val" if h == 8 else "test")


# --------------------------------------------------------------------------- detection
def scan_layout(root: str | Path) -> Layout:
    """Recognise the layout of `root` and list its samples. DataError if none fits."""
    from pixelwise.data.annotations import scan_annotation_layout  # LabelMe/COCO/CVAT/Label Studio exports

    annotated = scan_annotation_layout(root)
    if annotated is not None:
        return annotated
    root = Path(root)
    if not root.exists():
        raise DataError(root, "data folder does not exist")
    if not root.is_dir():
        raise DataError(root, "expected a data folder (or synthetic:shapes / synthetic:wafer)")
    for sub in ("", "VOC2012", "VOCdevkit/VOC2012"):
        if (root / sub / "JPEGImages").is_dir() and (root / sub / "SegmentationClass").is_dir():
            return _scan_voc(root / sub if sub else root)
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return _scan_cityscapes(root)
    if any((root / f"{s}annot").is_dir() for s in SPLITS):
        return _scan_segnet(root)
    for img_name in ("images", "imgs", "image"):
        for mask_name in ("masks", "labels", "annotations", "mask", "label"):
            if (root / img_name).is_dir() and (root / mask_name).is_dir():
                return _scan_folder(root, root / img_name, root / mask_name)
    raise DataError(root, "no known layout: expected images/ + masks/ (folder pairs), JPEGImages/ + "
                    "SegmentationClass/ (VOC), leftImg8bit/ + gtFine/ (Cityscapes) or train/ + trainannot/ (CamVid)")


def _scan_folder(root: Path, images_dir: Path, masks_dir: Path) -> Layout:
    class_file = find_class_file(root)
    classes = load_class_table(class_file) if class_file else None
    layout = Layout(root, "folder", classes or ClassTable(["background", "foreground"], [(0, 0, 0), (255, 255, 255)]),
                    "index", {})
    image_splits = {_SPLIT_ALIASES[d.name]: d for d in sorted(images_dir.iterdir())
                    if d.is_dir() and d.name in _SPLIT_ALIASES}
    image_splits = dict(sorted(image_splits.items(), key=lambda kv: SPLITS.index(kv[0])))
    mask_subdirs = sorted(d for d in masks_dir.iterdir() if d.is_dir())

    def mask_folder_for(split_dir_name: str | None) -> Path:
        if split_dir_name is None:
            return masks_dir
        for d in mask_subdirs:
            if _SPLIT_ALIASES.get(d.name) == _SPLIT_ALIASES[split_dir_name]:
                return d
        return masks_dir / split_dir_name

    groups: dict[str, tuple[Path, Path]] = {}
    if image_splits:
        for split, d in image_splits.items():
            groups[split] = (d, mask_folder_for(d.name))
            layout.declared_splits.add(split)
    else:
        groups["all"] = (images_dir, masks_dir)

    # A folder of binary masks per class (multilabel) under masks/ or masks/<split>/
    sample_mask_dir = next(iter(groups.values()))[1]
    class_dirs = [d.name for d in sorted(sample_mask_dir.iterdir())
                  if d.is_dir() and d.name not in _SPLIT_ALIASES] if sample_mask_dir.is_dir() else []
    per_class = bool(class_dirs) and (classes is None or classes.task == "multilabel")
    if per_class:
        names = classes.names if classes else class_dirs
        missing = [n for n in names if n not in class_dirs]
        if missing:
            raise DataError(sample_mask_dir, f"multilabel class folder(s) missing: {missing}")
        layout.classes = classes or ClassTable(names, default_colors(len(names) + 1)[1:], 255, "multilabel",
                                               source=f"multilabel: one mask folder per class {names}")
        layout.encoding = "multilabel"

    for split, (img_dir, mask_dir) in groups.items():
        images = _list_files(img_dir, IMAGE_EXTS + ARRAY_EXTS)
        if per_class:
            samples = _pair_per_class(images, img_dir, mask_dir, layout.classes.names, layout)
        else:
            masks = _list_files(mask_dir, MASK_EXTS)
            samples = _pair(images, img_dir, masks, mask_dir, layout)
        layout.splits[split] = samples

    if "all" in layout.splits:
        _apply_split_lists(root, layout)
    if classes is None and not per_class:
        _infer_into(layout)
    elif classes is not None and classes.task == "multilabel":
        layout.encoding = "multilabel"
    elif not per_class:
        _detect_rgb(layout)
    return layout


def _pair_per_class(images: list[Path], img_dir: Path, mask_dir: Path, names: list[str],
                    layout: Layout) -> list[Sample]:
    per_class = {n: {_key(m, mask_dir / n): m for m in _list_files(mask_dir / n, MASK_EXTS)} for n in names}
    samples = []
    for img in images:
        k = _key(img, img_dir)
        paths = [per_class[n].get(k) for n in names]
        if any(p is None for p in paths):
            missing = [n for n, p in zip(names, paths) if p is None]
            layout.problems.append((img, f"no mask for class(es) {missing}"))
            layout.orphan_images.append(img)
            continue
        samples.append(Sample(k, img, tuple(paths)))
    keys = {_key(i, img_dir) for i in images}
    for n in names:
        layout.orphan_masks.extend(m for k, m in per_class[n].items() if k not in keys)
    return samples


def _apply_split_lists(root: Path, layout: Layout) -> None:
    """Split list files, or a stable hash split when there are none."""
    samples = layout.splits.pop("all")
    lists = {}
    for split in SPLITS:
        for cand in (root / "splits" / f"{split}.txt", root / f"{split}.txt"):
            if cand.is_file():
                lists[split] = cand
                break
    if not lists:
        layout.splits = {s: [] for s in SPLITS}
        for sample in samples:
            layout.splits[_hash_split(sample.name)].append(sample)
        layout.notes.append("no split folders or lists: train/val/test is a stable 80/10/10 split by file name")
        return
    by_name = {s.name: s for s in samples}
    by_stem = {Path(s.name).name: s for s in samples}
    for split, path in lists.items():
        layout.declared_splits.add(split)
        chosen = []
        for entry in _read_list(path):
            key = Path(entry).with_suffix("").as_posix() if Path(entry).suffix.lower() in IMAGE_EXTS else entry
            for prefix in ("images/",):
                key = key[len(prefix):] if key.startswith(prefix) else key
            s = by_name.get(key) or by_stem.get(Path(key).name)
            if s is None:
                layout.problems.append((path, f"lists {entry!r}, which has no image+mask pair"))
            else:
                chosen.append(s)
        layout.splits[split] = chosen


def _scan_masks_for_values(layout: Layout, limit: int = 200) -> tuple[dict[int, int], set, int]:
    samples = layout.split("all")
    picked = samples if len(samples) <= limit else [samples[i] for i in np.linspace(0, len(samples) - 1, limit).astype(int)]
    counts: dict[int, int] = {}
    colors: set = set()
    n = 0
    for s in picked:
        try:
            raw = read_mask(s.mask_path)
        except DataError:
            continue  # check reports unreadable files; inference uses the readable ones
        n += 1
        if is_colour_mask(raw):
            colors.update(unpack_rgb(np.unique(pack_rgb(raw[..., :3]))))
            continue
        raw = squeeze_grey(raw)
        if raw.ndim == 3:
            raw = raw[..., 0]  # a multi-channel array: its first plane tells the value range
        if not np.issubdtype(raw.dtype, np.integer):
            continue
        bc = class_pixel_counts(raw)
        for v in np.flatnonzero(bc).tolist():
            counts[v] = counts.get(v, 0) + int(bc[v])
    return counts, colors, n


def _infer_into(layout: Layout) -> None:
    counts, colors, n = _scan_masks_for_values(layout)
    if n == 0:
        layout.problems.append((None, "no readable masks to infer classes from"))
        layout.notes.append("no classes.json and no readable masks: assuming binary background/foreground")
        return
    layout.classes = infer_classes(counts, colors, n)
    layout.encoding = "rgb" if colors else "index"
    layout.notes.append(f"no classes.json/classes.yaml: {layout.classes.source}")


def _detect_rgb(layout: Layout) -> None:
    for s in layout.split("all")[:1]:
        try:
            raw = read_mask(s.mask_path)
        except DataError:
            return
        if raw.ndim == 3 and raw.shape[2] >= 3:
            layout.encoding = "rgb"


# --------------------------------------------------------------------------- VOC
VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
             "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
             "train", "tvmonitor"]


def _scan_voc(root: Path) -> Layout:
    class_file = find_class_file(root)
    classes = load_class_table(class_file) if class_file else ClassTable(
        VOC_NAMES, default_colors(len(VOC_NAMES)), 255, "multiclass", source="Pascal VOC (21 classes)")
    layout = Layout(root, "voc", classes, "index", {})
    images = {p.stem: p for p in _list_files(root / "JPEGImages", IMAGE_EXTS, recursive=False)}
    masks = {p.stem: p for p in _list_files(root / "SegmentationClass", MASK_EXTS, recursive=False)}
    list_dir = root / "ImageSets" / "Segmentation"
    for name in ("train", "val", "trainval", "test"):
        path = list_dir / f"{name}.txt"
        if not path.is_file() or (name == "trainval" and (list_dir / "train.txt").is_file()):
            continue  # trainval repeats train + val
        layout.declared_splits.add(name)
        samples = []
        for stem in _read_list(path):
            img, mask = images.get(stem), masks.get(stem)
            if img is None:
                layout.problems.append((path, f"lists {stem!r} but JPEGImages/{stem}.jpg is missing"))
            elif mask is None and name != "test":
                layout.orphan_images.append(img)
            else:
                samples.append(Sample(stem, img, mask))
        layout.splits[name] = samples
    if not layout.splits:
        layout.notes.append("no ImageSets/Segmentation lists: every annotated image is in split 'all'")
        layout.splits["all"] = [Sample(k, images[k], masks[k]) for k in sorted(masks) if k in images]
    layout.orphan_masks.extend(p for k, p in masks.items() if k not in images)
    return layout


# --------------------------------------------------------------------------- Cityscapes
# (name, labelId, trainId colour) for the 19 evaluated classes; every other labelId -> ignore.
CITYSCAPES = [("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)), ("building", 11, (70, 70, 70)),
              ("wall", 12, (102, 102, 156)), ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
              ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)),
              ("vegetation", 21, (107, 142, 35)), ("terrain", 22, (152, 251, 152)), ("sky", 23, (70, 130, 180)),
              ("person", 24, (220, 20, 60)), ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)),
              ("truck", 27, (0, 0, 70)), ("bus", 28, (0, 60, 100)), ("train", 31, (0, 80, 100)),
              ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32))]


def cityscapes_classes() -> ClassTable:
    value_map = {label_id: 255 for label_id in range(34)}
    value_map.update({label_id: train_id for train_id, (_, label_id, _) in enumerate(CITYSCAPES)})
    value_map[255] = 255
    return ClassTable([n for n, _, _ in CITYSCAPES], [c for _, _, c in CITYSCAPES], 255, "multiclass",
                      value_map=value_map, source="Cityscapes labelIds -> 19 train ids, others ignored")


def _scan_cityscapes(root: Path) -> Layout:
    layout = Layout(root, "cityscapes", cityscapes_classes(), "index", {})
    for split_dir in sorted((root / "leftImg8bit").iterdir()):
        if not split_dir.is_dir():
            continue
        split = _SPLIT_ALIASES.get(split_dir.name, split_dir.name)
        layout.declared_splits.add(split)
        masks = {}
        for m in _list_files(root / "gtFine" / split_dir.name, (".png",)):
            if m.name.endswith("_gtFine_labelIds.png"):
                masks[m.name[: -len("_gtFine_labelIds.png")]] = m
        samples = []
        for img in _list_files(split_dir, (".png",)):
            if not img.name.endswith("_leftImg8bit.png"):
                continue
            stem = img.name[: -len("_leftImg8bit.png")]
            mask = masks.pop(stem, None)
            if mask is None:
                layout.orphan_images.append(img)
            else:
                samples.append(Sample(f"{img.parent.name}/{stem}", img, mask))
        layout.orphan_masks.extend(masks.values())
        layout.splits[split] = samples
    return layout


# --------------------------------------------------------------------------- CamVid (SegNet)
CAMVID_NAMES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                "Pedestrian", "Bicyclist"]
CAMVID_COLORS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                 (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]


def _scan_segnet(root: Path) -> Layout:
    class_file = find_class_file(root)
    if class_file:
        classes = load_class_table(class_file)
    else:
        # SegNet's annotations use 11 for "Unlabelled": ignore it
        value_map = {i: i for i in range(11)} | {11: 255, 255: 255}
        classes = ClassTable(CAMVID_NAMES, CAMVID_COLORS, 255, "multiclass", value_map=value_map,
                             source="CamVid (SegNet): 11 classes, 11 = Unlabelled -> ignore")
    layout = Layout(root, "camvid-segnet", classes, "index", {})
    for split in SPLITS:
        img_dir, mask_dir = root / split, root / f"{split}annot"
        if not img_dir.is_dir() and not mask_dir.is_dir():
            continue
        layout.declared_splits.add(split)
        layout.splits[split] = _pair(_list_files(img_dir, IMAGE_EXTS), img_dir,
                                     _list_files(mask_dir, MASK_EXTS), mask_dir, layout)
    return layout
