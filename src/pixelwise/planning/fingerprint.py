"""The data set's fingerprint: what a training plan needs to know about the data.

    fp = fingerprint("/data/membranes")          # any layout, or "synthetic:shapes?n=64"
    fp.task, fp.num_classes, fp.image_size["median"], fp.class_share, fp.objects["cell"].p5_area

Like nnU-Net's, it is measured once from the training split and cached (keyed by the data
spec and the names, sizes and modification times of the files), so planning again is free.
Masks are read through the dataset (`read_mask`), so every layout pixelwise reads, annotation
exports and synthetic sets included, is fingerprinted the same way.

Object sizes are the areas of connected components (8-connected) per class, at the images'
own resolution. A component is *thin* when its width is below `THIN_WIDTH` pixels: such
structures (membranes, cracks, vessels) vanish when downscaled. The width is the shorter side
of the rectangle with the component's area A and perimeter P (pixel edges):
w = (P/2 - sqrt((P/2)^2 - 4A)) / 2, exact for rectangles (a 5x5 square: 5; a 1x20 line: 1).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelwise import atomic

FORMAT = "pixelwise-fingerprint/1"
THIN_WIDTH = 4.0            # pixels: components narrower than this are thin
MAX_MASKS = 200             # masks read for shares and objects (evenly spaced over the split)


@dataclass(frozen=True)
class ObjectStats:
    """Connected components of one class over the masks read."""

    count: int                  # components found
    p5_area: float              # 5th percentile of component area, pixels (the small objects)
    median_area: float
    thin_share: float           # share of the class's components that are thin (width < THIN_WIDTH)


@dataclass(frozen=True)
class Fingerprint:
    data: str                               # the data spec as given
    split: str
    task: str                               # binary, multiclass, multilabel
    class_names: list[str]
    num_images: int
    channels: int
    image_size: dict[str, int]              # min / median / max of the shorter image side, pixels
    image_pixels_median: int                # median H*W
    class_share: list[float]                # share of labelled pixels per class (multilabel: positives)
    ignore_share: float                     # share of all pixels marked ignore_index
    objects: dict[str, ObjectStats] = field(default_factory=dict)   # per class, background left out
    masks_read: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def foreground_share(self) -> float:
        """Share of labelled pixels outside the background (class 0), or the rarest
        multilabel class's positive share."""
        if self.task == "multilabel":
            return min(self.class_share) if self.class_share else 0.0
        return float(sum(self.class_share[1:]))

    @property
    def imbalance(self) -> float:
        """Largest class share over the smallest non-zero one (1 = balanced)."""
        present = [s for s in self.class_share if s > 0]
        return max(present) / min(present) if present else 1.0

    @property
    def smallest_object_area(self) -> float | None:
        """The 5th-percentile component area of the class whose small objects are smallest."""
        areas = [o.p5_area for o in self.objects.values() if o.count]
        return min(areas) if areas else None

    @property
    def thin_share(self) -> float:
        """Share of all foreground components that are thin."""
        total = sum(o.count for o in self.objects.values())
        return sum(o.thin_share * o.count for o in self.objects.values()) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fingerprint":
        d = {k: v for k, v in d.items() if k != "format"}
        d["objects"] = {k: ObjectStats(**v) for k, v in d.get("objects", {}).items()}
        return cls(**d)

    def describe(self) -> list[str]:
        """Human-readable lines for `pixelwise plan`."""
        size = self.image_size
        lines = [f"data: {self.data} ({self.split}): {self.num_images} images, {self.channels} channel(s), "
                 f"{self.task} with {self.num_classes} classes",
                 f"image size (shorter side): min {size['min']}, median {size['median']}, max {size['max']} px",
                 "class shares: " + ", ".join(f"{n} {s:.3f}" for n, s in zip(self.class_names, self.class_share))
                 + f" (imbalance {self.imbalance:.1f}x, ignored {self.ignore_share:.3f})"]
        for name, o in self.objects.items():
            if o.count:
                lines.append(f"objects {name}: {o.count} components, 5th pct area {o.p5_area:.0f} px, "
                             f"median {o.median_area:.0f} px, thin (< {THIN_WIDTH:g} px wide) {o.thin_share:.0%}")
        return lines


# ----------------------------------------------------------------------------- measuring
def component_stats(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(areas, perimeters) of the 8-connected components of a boolean HxW mask.

    The perimeter counts pixel edges between a component and anything else (image borders
    included), so a w x L rectangle has area w*L and perimeter 2*(w+L).
    """
    import cv2

    count, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(0), np.zeros(0)
    padded = np.pad(labels, 1)
    centre = padded[1:-1, 1:-1]
    edges = np.zeros(count, np.int64)
    for shifted in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        boundary = (centre != shifted) & (centre > 0)
        edges += np.bincount(centre[boundary], minlength=count)
    areas = np.bincount(labels.ravel(), minlength=count)
    return areas[1:].astype(np.float64), edges[1:].astype(np.float64)


def equivalent_width(areas: np.ndarray, perimeters: np.ndarray) -> np.ndarray:
    """The shorter side of the rectangle with these areas and perimeters (see module docstring)."""
    half = perimeters / 2.0
    return (half - np.sqrt(np.maximum(half * half - 4.0 * areas, 0.0))) / 2.0


def _sample_indices(n: int, limit: int) -> list[int]:
    return list(range(n)) if n <= limit else [int(i) for i in np.linspace(0, n - 1, limit)]


def measure(dataset: Any, data: str, split: str, max_masks: int = MAX_MASKS) -> Fingerprint:
    """Measure a `SegmentationDataset` (see module docstring)."""
    from pixelwise.data.io import image_size
    from pixelwise.data.masks import class_pixel_counts

    classes, task = dataset.classes, dataset.task
    n, k, ignore = len(dataset), classes.num_classes, classes.ignore_index
    multilabel = task.kind == "multilabel"
    sides, pixels = [], []
    for i in range(n):  # image headers only: cheap even for thousands of files
        path = dataset.samples[i].image_path
        if path is not None:
            w, h = image_size(path)
            sides.append(min(w, h))
            pixels.append(w * h)
    counts = np.zeros(k, np.int64)
    ignored = total = 0
    areas: list[list[np.ndarray]] = [[] for _ in range(k)]
    perimeters: list[list[np.ndarray]] = [[] for _ in range(k)]
    read = _sample_indices(n, max_masks)
    for i in read:
        mask = dataset.read_mask(i)
        if dataset.generator is not None:  # synthetic: sizes from the rendered sample
            sides.append(min(mask.shape[:2]))
            pixels.append(mask.shape[0] * mask.shape[1])
        if multilabel:  # HxWxC in {0,1}, ignore_index per element
            total += mask.shape[0] * mask.shape[1]
            ignored += int((mask == ignore).any(axis=2).sum())
            for c in range(k):
                positive = mask[..., c] == 1
                counts[c] += int(positive.sum())
                a, p = component_stats(positive)
                areas[c].append(a), perimeters[c].append(p)
        else:
            per_id = class_pixel_counts(mask, max(k, ignore + 1))
            counts += per_id[:k]
            ignored += int(per_id[ignore]) if ignore < per_id.size else 0
            total += mask.size
            for c in range(1, k):  # background (class 0) is not an object
                a, p = component_stats(mask == c)
                areas[c].append(a), perimeters[c].append(p)
    labelled = max(int(counts.sum()), 1) if not multilabel else max(total - ignored, 1)
    objects = {}
    for c in range(0 if multilabel else 1, k):
        a = np.concatenate(areas[c]) if areas[c] else np.zeros(0)
        p = np.concatenate(perimeters[c]) if perimeters[c] else np.zeros(0)
        if a.size == 0:
            objects[classes.names[c]] = ObjectStats(0, 0.0, 0.0, 0.0)
            continue
        width = equivalent_width(a, p)
        objects[classes.names[c]] = ObjectStats(int(a.size), float(np.percentile(a, 5)), float(np.median(a)),
                                                float((width < THIN_WIDTH).mean()))
    channels = dataset.in_channels if n else 0
    sides_arr = np.asarray(sides or [0])
    return Fingerprint(
        data=data, split=split, task=task.kind, class_names=list(classes.names), num_images=n, channels=channels,
        image_size={"min": int(sides_arr.min()), "median": int(np.median(sides_arr)), "max": int(sides_arr.max())},
        image_pixels_median=int(np.median(pixels or [0])),
        class_share=[round(float(c) / labelled, 6) for c in counts],
        ignore_share=round(ignored / max(total, 1), 6), objects=objects, masks_read=len(read))


# ----------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """$PIXELWISE_HOME/cache, else the user cache dir (~/.cache/pixelwise)."""
    home = os.environ.get("PIXELWISE_HOME")
    if home:
        return Path(home) / "cache"
    from pixelwise.data.normalization import user_cache_dir

    return user_cache_dir()


def cache_key(dataset: Any, data: str, split: str) -> str:
    """Changes whenever a file of the split is added, removed, resized or touched."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{FORMAT}|{data}|{split}|{len(dataset)}|{MAX_MASKS}|{THIN_WIDTH}".encode())
    for s in dataset.samples:
        refs = s.mask_path if isinstance(s.mask_path, tuple) else (s.mask_path,)
        for path in (s.image_path, *refs):
            if path is None:
                continue
            try:
                st = os.stat(path)
                h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(str(path).encode())
    return h.hexdigest()


def fingerprint(data: str | Path, split: str = "train", *, use_cache: bool = True) -> Fingerprint:
    """The fingerprint of a data spec's split, from the cache when the files are unchanged."""
    from pixelwise.data import open_dataset

    data = str(data)
    dataset = open_dataset(data, split)
    if len(dataset) == 0:
        from pixelwise.errors import DataError

        raise DataError(None, f"split {split!r} of {data} holds no images: nothing to plan from")
    key = cache_key(dataset, data, split)
    path = cache_dir() / "fingerprints.json"
    if use_cache:
        entry = _load(path).get(key)
        if entry:
            return Fingerprint.from_dict(entry)
    fp = measure(dataset, data, split)
    if use_cache:
        stored = _load(path)
        stored[key] = fp.to_dict()
        try:
            atomic.write_text(path, json.dumps(stored, indent=1))
        except OSError:
            pass  # a read-only cache only costs a re-measurement
    return fp


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
