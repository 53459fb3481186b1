"""`SegmentationDataset` and `open_dataset`: one dataset type for every layout and synthetic set.

    ds = open_dataset("/data/camvid", "train", transform=build_transforms(True, 256, mean, std))
    image, target = ds[0]      # float32 (C, H, W); int64 (H, W) or float32 (C, H, W) multilabel
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from pixelwise.data.classes import ClassTable, MaskDecoder, stack_class_masks
from pixelwise.data.io import read_image
from pixelwise.data.masks import read_mask, size_mismatch
from pixelwise.data.layouts import Layout, Sample, scan_layout
from pixelwise.data import synthetic
from pixelwise.errors import ConfigError, DataError, TaskError

Transform = Callable[[np.ndarray, np.ndarray], tuple[Tensor, Tensor]]
SYNTHETIC = {"shapes": {"n": 400, "n_val": 100, "n_test": 100, "size": 128, "seed": 0, "max_shapes": 4},
             "wafer": {"n": 800, "n_val": 200, "n_test": 200, "size": 64, "seed": 0}}


class SegmentationDataset(Dataset):
    """Images and targets of one split. `read_raw(i)` gives the untransformed arrays."""

    def __init__(self, samples: list[Sample], classes: ClassTable, task: Any = None,
                 transform: Transform | None = None, *, encoding: str = "index",
                 generator: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
                 name: str = "", split: str = ""):
        self.samples = samples
        self.classes = classes
        self.task = resolve_task(classes, task)
        self.transform = transform
        self.decoder = MaskDecoder(classes, encoding)
        self.generator = generator  # synthetic sets render sample i instead of reading files
        self.name = name
        self.split = split
        self._in_channels: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def read_image(self, i: int) -> np.ndarray:
        """Image i as HxWxC uint8/uint16, untransformed."""
        if self.generator is not None:
            return self.generator(i)[0]
        return read_image(self.samples[i].image_path)

    def read_mask(self, i: int) -> np.ndarray:
        """Target i decoded: HxW class ids (uint8/uint16) or HxWxC {0,1} uint8 (multilabel)."""
        if self.generator is not None:
            return self.generator(i)[1]
        ref = self.samples[i].mask_path
        if ref is None:
            raise DataError(self.samples[i].image_path, "this image has no mask")
        if isinstance(ref, tuple):
            raw = stack_class_masks([read_mask(p) for p in ref], ref)
            return self.decoder.decode_multilabel(raw, ref[0])
        return self.decoder.decode(read_mask(ref), ref)

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image HxWxC uint8/uint16, decoded mask) for sample i, with matching sizes checked."""
        if self.generator is not None:
            return self.generator(i)
        image, mask = self.read_image(i), self.read_mask(i)
        s = self.samples[i]
        mismatch = size_mismatch(mask.shape, image.shape, s.image_path.name)
        if mismatch:
            raise DataError(s.mask_path[0] if isinstance(s.mask_path, tuple) else s.mask_path, mismatch)
        return image, mask

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.read_raw(i)
        if self.transform is not None:
            return self.transform(image, mask)
        from pixelwise.data.transforms import SegmentationTransform, mask_to_tensor

        return SegmentationTransform(False).to_tensor(image), mask_to_tensor(mask)  # 0..1, not standardised

    @property
    def in_channels(self) -> int:
        """Number of image channels (read from the first sample)."""
        if self._in_channels is None:
            if not self.samples:
                raise DataError(None, f"split {self.split!r} of {self.name} is empty")
            self._in_channels = int(self.read_image(0).shape[2])
        return self._in_channels

    def __repr__(self) -> str:
        return (f"SegmentationDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"task={self.task.kind}, classes={self.classes.num_classes})")


def resolve_task(classes: ClassTable, task: Any = None):
    """The Task for this data: the table's suggestion, or the requested one if it fits."""
    from pixelwise.tasks import Task

    if task is None:
        return classes.make_task()
    if isinstance(task, str):
        if classes.task == "multilabel" and task != "multilabel":
            raise TaskError(f"the data is multilabel (one mask per class); a {task} task cannot use it")
        if task == "multilabel" and classes.task != "multilabel":
            raise TaskError(f"the data has one label per pixel ({classes.task}); use binary or multiclass")
        if task == "binary" and classes.num_classes != 2:
            raise TaskError(f"binary needs 2 classes, the data has {classes.num_classes}: {classes.names}")
        return Task(task, classes.num_classes, classes.ignore_index)
    if not isinstance(task, Task):
        raise TaskError(f"task must be a Task or one of binary/multiclass/multilabel, got {task!r}")
    if task.num_classes != classes.num_classes:
        raise TaskError(f"task has {task.num_classes} classes but the data has {classes.num_classes}: {classes.names}")
    return task


def parse_spec(spec: str | Path) -> tuple[str, str | None, dict[str, int]]:
    """'synthetic:shapes?n=400&size=128' -> ('synthetic', 'shapes', {'n': 400, 'size': 128});
    a folder -> ('folder', path, {})."""
    text = str(spec)
    if not text.startswith("synthetic:"):
        return "folder", text, {}
    body = text[len("synthetic:"):]
    name, _, query = body.partition("?")
    if name not in SYNTHETIC:
        raise ConfigError(f"unknown synthetic data set {name!r}; available: {', '.join(sorted(SYNTHETIC))}")
    options = dict(SYNTHETIC[name])
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in options:
            raise ConfigError(f"synthetic:{name} has no option {key!r}; accepted: {', '.join(options)}")
        try:
            options[key] = int(value)
        except ValueError:
            raise ConfigError(f"synthetic:{name} option {key}={value!r} must be an integer") from None
        if options[key] < (0 if key == "seed" else 1):
            raise ConfigError(f"synthetic:{name} option {key} must be positive, got {value}")
    return "synthetic", name, options


def _synthetic_dataset(name: str, options: dict[str, int], split: str, transform, task, spec: str
                       ) -> SegmentationDataset:
    if split not in ("train", "val", "test"):
        raise DataError(None, f"synthetic:{name} has splits train, val, test; got {split!r}")
    n = {"train": options["n"], "val": options["n_val"], "test": options["n_test"]}[split]
    seed = synthetic.split_seed(options["seed"], split)
    if name == "shapes":
        classes = synthetic.shapes_classes()
        gen = partial(_shapes_sample, seed=seed, size=options["size"], max_shapes=options["max_shapes"])
    else:
        classes = synthetic.wafer_classes()
        gen = partial(_wafer_sample, seed=seed, size=options["size"])
    samples = [Sample(f"{name}_{split}_{i:05d}", None, None) for i in range(n)]
    return SegmentationDataset(samples, classes, task, transform, encoding="multilabel" if name == "wafer" else "index",
                               generator=gen, name=spec, split=split)


def _shapes_sample(i: int, *, seed: int, size: int, max_shapes: int) -> tuple[np.ndarray, np.ndarray]:
    image, mask, _ = synthetic.render_shapes(seed, i, size, max_shapes)
    return image, mask


def _wafer_sample(i: int, *, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    image, masks, _ = synthetic.render_wafer(seed, i, size)
    return image, masks


def open_layout(spec: str | Path) -> Layout:
    kind, where, _ = parse_spec(spec)
    if kind != "folder":
        raise DataError(None, f"{spec} is synthetic: it has no files to scan")
    return scan_layout(Path(where).expanduser())


def open_dataset(spec: str | Path, split: str, *, transform: Transform | None = None,
                 task: Any = None) -> SegmentationDataset:
    """A folder in any supported layout, or 'synthetic:shapes' / 'synthetic:wafer' (with
    options '?n=400&n_val=100&size=128&seed=0'). `split`: train, val, test (or all)."""
    kind, where, options = parse_spec(spec)
    if kind == "synthetic":
        return _synthetic_dataset(where, options, split, transform, task, str(spec))
    layout = scan_layout(Path(where).expanduser())
    return SegmentationDataset(layout.split(split), layout.classes, task, transform, encoding=layout.encoding,
                               name=str(spec), split=split)


def dataset_classes(spec: str | Path) -> ClassTable:
    """The class table of a data spec, without building a dataset."""
    kind, where, _ = parse_spec(spec)
    if kind == "synthetic":
        return synthetic.shapes_classes() if where == "shapes" else synthetic.wafer_classes()
    return scan_layout(Path(where).expanduser()).classes
