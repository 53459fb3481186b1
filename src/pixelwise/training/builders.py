"""Builders: a recipe (`Config`) -> the parts a `Trainer` runs (data, model, loss, optimizer).

Each builder reads the config and returns new objects; none writes to the config. Every
user mistake (a missing folder, an impossible crop, an unknown model keyword or loss) is a
`ConfigError` naming the key, raised before any training starts.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from pixelwise.errors import ConfigError, PixelwiseError
from pixelwise.runtime import Runtime
from pixelwise.training import distributed as D
from pixelwise.training.config import Config, OptimConfig
from pixelwise.training.schedules import build_scheduler

__all__ = ["TrainData", "TrainParts", "build_data", "build_model", "build_loss", "build_optimizer",
           "build_scheduler", "build_parts", "steps_per_epoch"]


# ----------------------------------------------------------------------------- data helpers
def resolve_data_root(root: str) -> str:
    """Synthetic specs pass through; folders resolve against the current directory."""
    if root.startswith("synthetic:"):
        return root
    base, sep, query = root.partition("?")  # annotation options: coco.json?images=ROOT
    if Path(root).expanduser().exists():
        base, sep, query = root, "", ""
    path = Path(base).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"data.root: {root!r} does not exist (resolved to {path}); set data.root=PATH")
    return str(path) + sep + query


def base_dataset(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def shard_for_eval(dataset: Dataset, info: D.DistInfo) -> tuple[Dataset, list[int]]:
    """Every process takes every world_size-th image: no padding, no duplicates, so a
    summed confusion matrix counts each pixel once (DistributedSampler would pad)."""
    indices = list(range(info.rank, len(dataset), info.world_size))
    return Subset(dataset, indices), indices


def limited(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


def check_crop(dataset: Dataset, crop_size: int | None, split: str) -> None:
    """Reject a crop larger than every image of the split before any training starts."""
    if crop_size is None:
        return
    from pixelwise.data.io import image_size

    base = base_dataset(dataset)
    sizes = []
    samples = getattr(base, "samples", None) or []
    for sample in samples[:64]:
        path = getattr(sample, "image_path", None)
        if path is not None and Path(path).is_file():
            sizes.append(tuple(image_size(path)))
    if not sizes:  # synthetic data: look at one transformed-free sample
        raw = base.read_raw(0)[0] if hasattr(base, "read_raw") else None
        if raw is None:
            return
        sizes.append(raw.shape[:2])
    if all(crop_size > min(s) for s in sizes):
        raise ConfigError(
            f"data.crop_size: {crop_size} is larger than every {split} image "
            f"(smallest side at most {max(min(s) for s in sizes)})"
        )


def class_pixel_counts(dataset: Dataset, num_classes: int, ignore_index: int) -> np.ndarray:
    """Pixels per class per image (n_images, C) over the untransformed masks.

    Per image, not summed, because SegNet's median-frequency balancing divides a class's
    pixels by the pixels of only the images where that class appears.
    """
    from pixelwise.data.masks import class_pixel_counts as count_one  # ignore_index >= num_classes: not counted

    base = base_dataset(dataset)
    indices = dataset.indices if isinstance(dataset, Subset) else range(len(base))
    counts = np.zeros((len(indices), num_classes), dtype=np.int64)
    for row, i in enumerate(indices):
        counts[row] = count_one(base.read_mask(i), num_classes)  # the mask alone: no image decoding
    return counts


# ----------------------------------------------------------------------------- builders
@dataclass
class TrainData:
    """The datasets and loaders of a run, with what they tell about the data."""

    root: str                       # resolved data.root (absolute folder or synthetic spec)
    task: Any                       # pixelwise.tasks.Task
    classes: Any                    # pixelwise.data.ClassTable
    mean: list[float]
    std: list[float]
    train_ds: Dataset
    val_ds: Dataset
    train_loader: DataLoader
    val_loader: DataLoader          # this process's shard of the validation split

    @property
    def in_channels(self) -> int:
        return len(self.mean)


def build_data(cfg: Config, dist: D.DistInfo = D.DistInfo(), pretrained: Any = None) -> TrainData:
    """Open the train and val splits with their transforms and loaders (mean/std: the recipe's,
    else the pretrained weights' (a pixelwise.weights.RecipeWeights), else from the data)."""
    from pixelwise.data import build_loader, build_transforms, dataset_mean_std, open_dataset

    root = resolve_data_root(cfg.data.root)
    probe = open_dataset(root, cfg.data.train_split)
    task, classes = probe.task, probe.classes
    if cfg.data.mean is not None:
        mean, std = list(cfg.data.mean), list(cfg.data.std)
    elif pretrained is not None:  # the weights were trained with their own normalisation
        image = probe.read_image(0)
        mean, std = pretrained.normalisation(image.shape[-1] if image.ndim == 3 else 1)
    else:
        m, s = dataset_mean_std(probe)
        mean, std = [float(v) for v in m], [float(v) for v in s]
    ignore = task.ignore_index
    try:
        train_tf = build_transforms(True, cfg.data.crop_size, mean, std, ignore, **cfg.data.augment)
    except TypeError as exc:
        raise ConfigError(f"data.augment: {exc}") from None
    val_tf = build_transforms(False, None, mean, std, ignore)
    train_ds = limited(open_dataset(root, cfg.data.train_split, transform=train_tf), cfg.data.limit)
    val_ds = limited(open_dataset(root, cfg.data.val_split, transform=val_tf), cfg.data.limit)
    for split, ds in ((cfg.data.train_split, train_ds), (cfg.data.val_split, val_ds)):
        if len(ds) == 0:
            raise ConfigError(f"data.root: split {split!r} of {root} holds no images")
    check_crop(train_ds, cfg.data.crop_size, cfg.data.train_split)
    train_loader = build_loader(train_ds, cfg.data.batch_size, train=True, num_workers=cfg.data.num_workers,
                                distributed=dist.enabled, seed=cfg.train.seed)
    val_shard, _ = shard_for_eval(val_ds, dist)
    val_loader = DataLoader(val_shard, batch_size=cfg.data.val_batch_size, shuffle=False,
                            num_workers=cfg.data.num_workers)
    return TrainData(root, task, classes, mean, std, train_ds, val_ds, train_loader, val_loader)


def build_model(cfg: Config, task: Any, in_channels: int) -> tuple[nn.Module, dict[str, Any]]:
    """(model, spec): spec {name, kwargs} rebuilds it with create_model (stored in checkpoints)."""
    from pixelwise.models import create_model

    spec = {"name": cfg.model.name,
            "kwargs": {"num_classes": task.out_channels, "in_channels": in_channels, **cfg.model.kwargs}}
    try:
        return create_model(cfg.model.name, **spec["kwargs"]), spec
    except PixelwiseError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from None


def build_loss(cfg: Config, data: TrainData, device: torch.device,
               say: Callable[[str], None] = lambda line: None) -> nn.Module:
    """train.loss (auto: ce for multiclass, bce otherwise), with data.class_weights from the
    training masks when asked."""
    from pixelwise.losses import build_loss as build_loss_spec, class_weights_from_counts

    task = data.task
    spec = cfg.train.loss
    if spec == "auto":
        spec = "ce" if task.kind == "multiclass" else "bce"
    weights = None
    if cfg.data.class_weights is not None:
        if task.kind == "multilabel":
            raise ConfigError("data.class_weights: not supported for a multilabel task")
        counts = class_pixel_counts(data.train_ds, task.num_classes, task.ignore_index)
        weights = class_weights_from_counts(torch.as_tensor(counts), method=cfg.data.class_weights)
        say("class weights (" + cfg.data.class_weights + "): "
            + ", ".join(f"{n}={w:.2f}" for n, w in zip(data.classes.names, weights.tolist())))
        weights = weights.to(device)
    try:
        return build_loss_spec(spec, task, class_weights=weights)
    except PixelwiseError:
        raise
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"train.loss: {exc}") from None


def build_optimizer(config: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def steps_per_epoch(cfg: Config, train_loader: DataLoader) -> int:
    """Optimizer steps per epoch: batches / accumulate, capped by train.max_steps_per_epoch."""
    steps = math.ceil(len(train_loader) / cfg.train.accumulate)
    if cfg.train.max_steps_per_epoch is not None:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    if steps == 0:
        raise ConfigError("data.batch_size: larger than the training set with drop_last; no step per epoch")
    return steps


@dataclass
class TrainParts:
    """Everything a Trainer runs, built once from a recipe (or by hand, in tests)."""

    data: TrainData
    model: nn.Module                # the plain model on the device (saved unwrapped)
    model_spec: dict[str, Any]
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    pretrained: Any = None          # pixelwise.weights.RecipeWeights loaded into the encoder, or None


def build_parts(cfg: Config, runtime: Runtime, dist: D.DistInfo = D.DistInfo(),
                say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> TrainParts:
    """Data, model (on the runtime's device and memory format), loss and optimizer of `cfg`.
    The model is built before any training, so a bad name or keyword fails fast."""
    from pixelwise.weights import resolve_recipe_weights

    # Before any data is read: missing weights fail now, with the command that fetches them.
    pretrained = resolve_recipe_weights(cfg.model.name, cfg.model.kwargs, cfg.model.encoder_weights)
    data = build_data(cfg, dist, pretrained)
    model, spec = build_model(cfg, data.task, data.in_channels)
    if pretrained is not None:
        pretrained.load_into(model)
        say(f"encoder weights {pretrained.entry.name} (sha256 {pretrained.cached.sha256[:12]}..., "
            f"{pretrained.entry.licence})")
    model = runtime.prepare(model)
    loss_fn = build_loss(cfg, data, runtime.device, say)
    return TrainParts(data=data, model=model, model_spec=spec, loss_fn=loss_fn,
                      optimizer=build_optimizer(cfg.optim, model),
                      steps_per_epoch=steps_per_epoch(cfg, data.train_loader), pretrained=pretrained)
