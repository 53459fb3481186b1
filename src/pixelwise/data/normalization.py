"""Per-channel mean/std of a data set (0..1 scale), computed once and cached.

The cache is a small JSON file next to the data (`.pixelwise-cache.json`), or under
`~/.cache/pixelwise/` when the data folder is read-only. Its key covers the file names,
sizes and modification times, so changed data is measured again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pixelwise import atomic

CACHE_NAME = ".pixelwise-cache.json"


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pixelwise"


def measure_mean_std(dataset, max_images: int = 500) -> tuple[list[float], list[float]]:
    """Mean and std per channel over (up to `max_images`, evenly spaced) images of `dataset`."""
    n = len(dataset)
    if n == 0:
        from pixelwise.errors import DataError

        raise DataError(None, f"cannot compute mean/std: split {dataset.split!r} of {dataset.name} is empty")
    idx = range(n) if n <= max_images else np.linspace(0, n - 1, max_images).astype(int)
    total = sq = None
    count = 0
    for i in idx:
        img = dataset.read_image(int(i))
        scale = 255.0 if img.dtype == np.uint8 else 65535.0
        x = img.reshape(-1, img.shape[2]).astype(np.float64) / scale
        if total is None:
            total, sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        if x.shape[1] != total.size:
            from pixelwise.errors import DataError

            raise DataError(None, f"images have different channel counts ({total.size} and {x.shape[1]})")
        total += x.sum(0)
        sq += np.einsum("ij,ij->j", x, x)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    std = np.where(std < 1e-6, 1.0, std)  # a constant channel: do not divide by zero
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def _fingerprint(dataset) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{dataset.name}|{dataset.split}|{len(dataset)}".encode())
    for s in dataset.samples:
        h.update(s.name.encode("utf-8", "surrogateescape"))
        if s.image_path is not None:
            try:
                st = os.stat(s.image_path)
                h.update(f"{s.image_path}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(str(s.image_path).encode())
    return h.hexdigest()


def _unwrap_subset(dataset):
    """A torch Subset of a SegmentationDataset -> a view with just those samples."""
    from torch.utils.data import Subset

    if not isinstance(dataset, Subset):
        return dataset
    import copy

    base = _unwrap_subset(dataset.dataset)
    indices = list(dataset.indices)
    view = copy.copy(base)
    view.samples = [base.samples[i] for i in indices]
    if base.generator is not None:
        view.generator = lambda i, g=base.generator: g(indices[i])
    return view


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _store(path: Path, data: dict[str, Any]) -> bool:
    try:
        atomic.write_text(path, json.dumps(data, indent=1))
        return True
    except OSError:
        return False


def dataset_mean_std(dataset_or_spec, split: str = "train", max_images: int = 500
                     ) -> tuple[list[float], list[float]]:
    """(mean, std) per channel on the 0..1 scale, from the cache when the data is unchanged."""
    from pixelwise.data.dataset import open_dataset, parse_spec

    dataset = dataset_or_spec
    if isinstance(dataset_or_spec, (str, Path)):
        dataset = open_dataset(dataset_or_spec, split)
    dataset = _unwrap_subset(dataset)
    key = _fingerprint(dataset)
    kind, where, _ = parse_spec(dataset.name) if dataset.name else ("synthetic", None, {})
    places = []
    if kind == "folder" and where and Path(where).is_dir():
        places.append(Path(where) / CACHE_NAME)
    places.append(user_cache_dir() / "mean_std.json")
    for place in places:
        entry = _load(place).get(key)
        if entry:
            return entry["mean"], entry["std"]
    mean, std = measure_mean_std(dataset, max_images)
    for place in places:
        data = _load(place)
        data[key] = {"mean": mean, "std": std, "data": dataset.name, "split": dataset.split}
        if _store(place, data):
            break
    return mean, std
