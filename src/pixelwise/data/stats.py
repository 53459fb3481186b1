"""`pixelwise data stats`: counts, sizes, class pixel shares, mean/std and suggestions.

Class shares come from one vectorised `bincount` per mask, so all of CamVid takes seconds.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pixelwise.data.dataset import SegmentationDataset, open_dataset, parse_spec
from pixelwise.data.io import image_size
from pixelwise.data.layouts import scan_layout
from pixelwise.data.masks import class_pixel_counts
from pixelwise.errors import DataError
from pixelwise.losses.weights import median_frequency


def _mask_counts(ds: SegmentationDataset, i: int, length: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Pixel count per class id (single-label: index = id, incl. ignore) or per class
    (multilabel: positives, with the pixel total last), and (W, H, C) of the image."""
    if ds.generator is not None:
        image, mask = ds.read_raw(i)
        size = (image.shape[1], image.shape[0], image.shape[2])
    else:
        mask = ds.read_mask(i)
        w, h = image_size(ds.samples[i].image_path)
        size = (w, h, 0)
    if mask.ndim == 3:  # multilabel: positives per class, then the pixel total
        return np.append(class_pixel_counts(mask, mask.shape[2]), mask.shape[0] * mask.shape[1]), size
    return class_pixel_counts(mask, length), size


def suggest_crop_size(sizes: Counter) -> int:
    """The largest multiple of 32 that fits the smallest side of the usual image, at most 512."""
    if not sizes:
        return 256
    (w, h), _ = sizes.most_common(1)[0]
    return int(max(32, min(512, (min(w, h) // 32) * 32)))


def split_stats(ds: SegmentationDataset, workers: int = 2) -> dict[str, Any]:
    classes = ds.classes
    multilabel = ds.task.kind == "multilabel"
    length = max(classes.num_classes, classes.ignore_index + 1)
    totals = np.zeros(classes.num_classes + 1 if multilabel else length, np.int64)
    image_pixels = np.zeros(classes.num_classes, np.int64)
    sizes: Counter = Counter()
    channels: Counter = Counter()
    errors = []

    def one(i: int):
        try:
            return _mask_counts(ds, i, length)
        except DataError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(one, range(len(ds))):
            if isinstance(result, DataError):
                errors.append(str(result))
                continue
            counts, (w, h, c) = result
            totals += counts
            # Labelled pixels only: ignored pixels never enter the loss, so they must not
            # dilute a class's frequency (the rule training uses, losses/weights.py).
            present = counts[: classes.num_classes] > 0
            image_pixels += present * (int(counts[: classes.num_classes].sum()) if not multilabel else w * h)
            sizes[(w, h)] += 1
            if c:
                channels[c] += 1
    out: dict[str, Any] = {"images": len(ds), "sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common()}}
    if multilabel:
        pixels = max(int(totals[-1]), 1)
        out["positive_share"] = {n: round(float(totals[k]) / pixels, 6) for k, n in enumerate(classes.names)}
        out["pixel_counts"] = {n: int(totals[k]) for k, n in enumerate(classes.names)}
    else:
        pixels = max(int(totals.sum()), 1)
        labelled = max(int(totals[: classes.num_classes].sum()), 1)
        share = {n: round(float(totals[k]) / pixels, 6) for k, n in enumerate(classes.names)}
        share[f"ignore({classes.ignore_index})"] = round(float(totals[classes.ignore_index]) / pixels, 6)
        out["pixel_share"] = share
        out["share_of_labelled"] = {n: round(float(totals[k]) / labelled, 6) for k, n in enumerate(classes.names)}
        out["pixel_counts"] = {n: int(totals[k]) for k, n in enumerate(classes.names)}
    out["_image_pixels"] = image_pixels
    out["_sizes"] = sizes
    if errors:
        out["unreadable"] = errors
    return out


def compute_stats(spec: str | Path, mean_std: bool = True, workers: int = 2) -> dict[str, Any]:
    """Stats of every split of a data folder or synthetic spec (see `pixelwise data stats`)."""
    from pixelwise.data.normalization import dataset_mean_std

    kind, where, _ = parse_spec(spec)
    if kind == "synthetic":
        split_names = ["train", "val", "test"]
        notes: list[str] = []
        layout_kind = "synthetic"
    else:
        layout = scan_layout(Path(where).expanduser())
        split_names = [s for s in layout.splits if layout.splits[s]]
        notes, layout_kind = list(layout.notes), layout.kind
        if not split_names:
            raise DataError(layout.root, "no image+mask pairs found")
    datasets = {s: open_dataset(spec, s) for s in split_names}
    first = datasets[split_names[0]]
    classes = first.classes
    result: dict[str, Any] = {
        "data": str(spec), "layout": layout_kind, "num_classes": classes.num_classes,
        "classes": list(classes.names), "colors": [list(c) for c in classes.colors],
        "ignore_index": classes.ignore_index, "suggested_task": first.task.kind, "notes": notes, "splits": {},
    }
    if classes.source:
        result["class_source"] = classes.source
    for name, ds in datasets.items():
        result["splits"][name] = split_stats(ds, workers)
    ref_name = "train" if "train" in datasets else split_names[0]
    ref = result["splits"][ref_name]
    if first.task.kind != "multilabel":
        counts = np.array([ref["pixel_counts"][n] for n in classes.names], np.float64)
        weights = median_frequency(counts, ref["_image_pixels"])
        result["class_weights"] = {n: round(float(w), 4) for n, w in zip(classes.names, weights)}
        result["class_weights_method"] = f"median frequency over split {ref_name!r}"
    all_sizes = sum((s["_sizes"] for s in result["splits"].values()), Counter())
    result["suggested_crop_size"] = suggest_crop_size(all_sizes)
    for s in result["splits"].values():
        s.pop("_image_pixels")
        s.pop("_sizes")
    if mean_std:
        mean, std = dataset_mean_std(datasets[ref_name])
        result["mean"], result["std"], result["mean_std_split"] = mean, std, ref_name
        result["in_channels"] = len(mean)
    return result


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable table of `compute_stats` output."""
    lines = [f"data: {stats['data']} ({stats['layout']} layout), {stats['num_classes']} classes, "
             f"ignore_index {stats['ignore_index']}"]
    if stats.get("class_source"):
        lines.append(f"classes from: {stats['class_source']}")
    lines += [f"note: {n}" for n in stats["notes"]]
    for name, s in stats["splits"].items():
        lines.append(f"{name}: {s['images']} images; sizes " + ", ".join(f"{k} ({v})" for k, v in s["sizes"].items()))
    splits = list(stats["splits"])
    key = "positive_share" if "positive_share" in stats["splits"][splits[0]] else "pixel_share"
    lines.append(f"\n{key} per split:")
    lines.append(f"  {'class':<20}" + "".join(f"{s:>10}" for s in splits)
                 + ("  weight" if "class_weights" in stats else ""))
    for cls in stats["splits"][splits[0]][key]:
        row = f"  {cls:<20}" + "".join(f"{stats['splits'][s][key].get(cls, 0.0):>10.4f}" for s in splits)
        if "class_weights" in stats and cls in stats["class_weights"]:
            row += f"  {stats['class_weights'][cls]:.3f}"
        lines.append(row)
    if "mean" in stats:
        lines.append(f"\nmean {stats['mean']}  std {stats['std']}  (split {stats['mean_std_split']}, 0..1 scale)")
    lines.append(f"suggested task: {stats['suggested_task']}; suggested crop size: {stats['suggested_crop_size']}")
    return "\n".join(lines)
