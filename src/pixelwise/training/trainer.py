"""The Trainer: wires data, model, loss, optimizer, schedule, checkpoints, logging and DDP
around the plain functions of `loop.py`.

Reproducibility: every epoch starts by re-seeding torch, numpy, python `random`, the
loader's shuffle and the augmentations from (seed, epoch, rank). A run resumed from
`last.pt` therefore replays exactly the batches and augmentations an uninterrupted run
would have seen; the RNG states are stored in the checkpoint as well, as the format asks.
"""

from __future__ import annotations

import json
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from pixelwise import atomic
from pixelwise.errors import CheckpointError, ConfigError, PixelwiseError
from pixelwise.training import distributed as D
from pixelwise.checkpoint import (
    capture_rng_state,
    copy_checkpoint,
    load_checkpoint,
    remove_interrupted_saves,
    restore_rng_state,
    save_checkpoint,
    save_safetensors,
    unwrapped_state_dict,
)
from pixelwise.training.config import Config, save_config
from pixelwise.training.logging import Progress, RunLogger
from pixelwise.training.loop import NonFiniteLossError, Precision, evaluate, train_one_epoch
from pixelwise.training.schedules import build_scheduler, lr_factor

# A time budget's epoch count is re-planned after each of this many first epochs.
BUDGET_PLANNING_EPOCHS = 3


# ----------------------------------------------------------------------------- helpers
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


def resolve_precision(amp: str, channels_last: bool | str, device: torch.device) -> Precision:
    """Pick the autocast dtype and memory format: bf16 + channels_last where the hardware is fast at it."""
    if amp == "auto":
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16 if _fast_mode_supported(device) else None
    elif amp == "off":
        dtype = None
    elif amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 or off on the CPU")
        dtype = torch.float16
    else:
        dtype = torch.bfloat16
    if channels_last == "auto":
        channels_last = device.type == "cuda" or _fast_mode_supported(device)
    return Precision(dtype=dtype, channels_last=bool(channels_last))


def _fast_mode_supported(device: torch.device) -> bool:
    from pixelwise.runtime import fast_mode_supported

    return bool(fast_mode_supported(device))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    # Distinct per epoch and per process, identical between a resumed and an uninterrupted run.
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % 2**31


def reseed_transforms(transform: Any, seed: int) -> None:
    """Re-seed albumentations pipelines (they keep their own RNG, deaf to global seeds):
    the transform itself or any pipeline held in its attributes, each from its own seed."""
    if transform is None:
        return
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
        return
    for offset, value in enumerate(vars(transform).values() if hasattr(transform, "__dict__") else ()):
        if hasattr(value, "set_random_seed"):
            value.set_random_seed(seed + offset + 1)


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


def collect_environment(device: torch.device) -> dict[str, Any]:
    """Hardware and versions for run.json."""
    from pixelwise import __version__

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pixelwise": __version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """`Trainer(config, run_dir).fit()` trains, validates, checkpoints and logs one run."""

    def __init__(self, config: Config, run_dir: str | Path, *, resume: bool = False, verbose: bool = True,
                 command: str | None = None):
        self.config = config
        self.command = command  # the command line that started this session, kept in run.json
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.verbose = verbose
        self.device = D.resolve_device(config.train.device)
        self.dist = D.init_distributed(self.device)
        self.precision = resolve_precision(config.train.amp, config.train.channels_last, self.device)
        self.step_losses: list[float] = []   # every optimizer step of this session (tests, plots)
        self._setup()

    # ------------------------------------------------------------------ setup
    def _say(self, message: str) -> None:
        if self.verbose and self.dist.is_main:
            print(message, file=sys.stderr, flush=True)

    def _setup(self) -> None:
        cfg = self.config
        seed_everything(cfg.train.seed)
        from pixelwise.data import build_loader, build_transforms, open_dataset

        self.data_root = resolve_data_root(cfg.data.root)
        probe = open_dataset(self.data_root, cfg.data.train_split)
        self.task = probe.task
        self.classes = probe.classes
        mean, std = self._mean_std(probe)
        self.mean, self.std = mean, std
        ignore = self.task.ignore_index
        try:
            train_tf = build_transforms(True, cfg.data.crop_size, mean, std, ignore, **cfg.data.augment)
        except TypeError as exc:
            raise ConfigError(f"data.augment: {exc}") from None
        val_tf = build_transforms(False, None, mean, std, ignore)
        train_ds = limited(open_dataset(self.data_root, cfg.data.train_split, transform=train_tf), cfg.data.limit)
        val_ds = limited(open_dataset(self.data_root, cfg.data.val_split, transform=val_tf), cfg.data.limit)
        if len(train_ds) == 0:
            raise ConfigError(f"data.root: split {cfg.data.train_split!r} of {self.data_root} holds no images")
        if len(val_ds) == 0:
            raise ConfigError(f"data.root: split {cfg.data.val_split!r} of {self.data_root} holds no images")
        check_crop(train_ds, cfg.data.crop_size, cfg.data.train_split)
        self.train_ds, self.val_ds = train_ds, val_ds
        self.train_loader = build_loader(train_ds, cfg.data.batch_size, train=True, num_workers=cfg.data.num_workers,
                                         distributed=self.dist.enabled, seed=cfg.train.seed)
        val_shard, _ = shard_for_eval(val_ds, self.dist)
        self.val_loader = DataLoader(val_shard, batch_size=cfg.data.val_batch_size, shuffle=False,
                                     num_workers=cfg.data.num_workers)

        # Model: built before any training, so a bad name or keyword fails fast.
        from pixelwise.models import create_model

        self.in_channels = len(mean)
        self.model_spec = {"name": cfg.model.name,
                           "kwargs": {"num_classes": self.task.out_channels, "in_channels": self.in_channels,
                                      **cfg.model.kwargs}}
        try:
            model = create_model(cfg.model.name, **self.model_spec["kwargs"])
        except PixelwiseError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"model: {exc}") from None
        memory_format = torch.channels_last if self.precision.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.net = D.wrap_model(self.model, self.dist, self.device, cfg.train.sync_batchnorm)
        if cfg.train.compile:
            self.net = torch.compile(self.net)

        self.loss_fn = self._build_loss(train_ds)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optim.name == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                               betas=cfg.optim.betas)
        else:
            self.optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                             weight_decay=cfg.optim.weight_decay)
        self.steps_per_epoch = self._steps_per_epoch()
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.train.epochs * self.steps_per_epoch)
        self.scaler = (torch.amp.GradScaler("cuda") if self.precision.dtype == torch.float16 else None)

        self.start_epoch = 0
        self._epoch_cap = cfg.train.epochs  # train.epochs before a time budget replans it
        self._epoch_costs: list[float] = []  # seconds per epoch (training + validation's share)
        self._val_seconds = 0.0
        self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.checkpoint_dir = self.run_dir / "checkpoints"
        if self.resume:
            self._load_state(self.checkpoint_dir / "last.pt")
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, resume=self.resume)
        if self.resume:
            self.logger.truncate_after(self.start_epoch)
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            for stale in remove_interrupted_saves(self.checkpoint_dir):
                self._say(f"removed {stale.name}, left by a save that was interrupted")

    def _mean_std(self, dataset: Any) -> tuple[list[float], list[float]]:
        if self.config.data.mean is not None:
            return list(self.config.data.mean), list(self.config.data.std)
        from pixelwise.data import dataset_mean_std

        mean, std = dataset_mean_std(dataset)
        return [float(m) for m in mean], [float(s) for s in std]

    def _build_loss(self, train_ds: Dataset) -> nn.Module:
        from pixelwise.losses import build_loss, class_weights_from_counts

        cfg = self.config
        spec = cfg.train.loss
        if spec == "auto":
            spec = "ce" if self.task.kind == "multiclass" else "bce"
        weights = None
        if cfg.data.class_weights is not None:
            if self.task.kind == "multilabel":
                raise ConfigError("data.class_weights: not supported for a multilabel task")
            counts = class_pixel_counts(train_ds, self.task.num_classes, self.task.ignore_index)
            weights = class_weights_from_counts(torch.as_tensor(counts), method=cfg.data.class_weights)
            self._say("class weights (" + cfg.data.class_weights + "): "
                      + ", ".join(f"{n}={w:.2f}" for n, w in zip(self.classes.names, weights.tolist())))
            weights = weights.to(self.device)
        try:
            return build_loss(spec, self.task, class_weights=weights)
        except PixelwiseError:
            raise
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"train.loss: {exc}") from None

    def _steps_per_epoch(self) -> int:
        batches = len(self.train_loader)
        steps = math.ceil(batches / self.config.train.accumulate)
        if self.config.train.max_steps_per_epoch is not None:
            steps = min(steps, self.config.train.max_steps_per_epoch)
        if steps == 0:
            raise ConfigError("data.batch_size: larger than the training set with drop_last; no step per epoch")
        return steps

    # ------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model_spec,
            "task": self.task.to_dict(),
            "classes": {"names": list(self.classes.names), "colors": [list(c) for c in self.classes.colors],
                        "ignore_index": int(self.classes.ignore_index)},
            "preprocess": {"mean": self.mean, "std": self.std, "in_channels": self.in_channels,
                           "crop_size": self.config.data.crop_size},
            "state_dict": unwrapped_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,
            "global_step": self.global_step,
            "rng": capture_rng_state(),
            "metrics": metrics,
            "config": self.config.to_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    def _load_state(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(f"{path}: nothing to resume (no last.pt in the run folder)")
        ckpt = load_checkpoint(path)
        if ckpt["model"] != self.model_spec:
            raise CheckpointError(f"{path}: model {ckpt['model']} differs from the config's {self.model_spec}")
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        self.start_epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt.get("global_step", 0))
        self.best_metric = ckpt.get("best_metric")
        self.best_epoch = ckpt.get("best_epoch")
        self.bad_epochs = int(ckpt.get("bad_epochs", 0))
        planned = int((ckpt.get("config") or {}).get("train", {}).get("epochs", self.config.train.epochs))
        if self.config.train.time_budget_minutes is not None and planned < self.config.train.epochs:
            # The budget already shortened this run: keep its plan and its schedule.
            self.config.train.epochs = planned
            self.scheduler.lr_lambdas[0] = lr_factor(self.config.schedule, planned * self.steps_per_epoch)
        self._say(f"resumed from {path} after epoch {self.start_epoch}")

    # ------------------------------------------------------------------ epochs
    def _begin_epoch(self, epoch: int) -> None:
        seed = epoch_seed(self.config.train.seed, epoch, self.dist.rank)
        seed_everything(seed)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        generator = getattr(self.train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(seed)
        reseed_transforms(getattr(base_dataset(self.train_ds), "transform", None), seed)

    def _validate(self) -> dict[str, Any]:
        result = evaluate(self.net, self.val_loader, self.task, device=self.device, precision=self.precision,
                          loss_fn=self.loss_fn)
        from pixelwise.metrics import summarize

        summary = summarize(result["confusion"].matrix, list(self.classes.names))
        return {"val_loss": result["loss"], **{f"val_{k}": summary[k] for k in
                ("miou", "pixel_accuracy", "mean_accuracy", "mean_dice", "fwiou")}}

    def _improved(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best_metric is None:
            return True
        delta = self.config.train.early_stopping.min_delta
        if self.config.train.select_mode == "max":
            return value > self.best_metric + delta
        return value < self.best_metric - delta

    def fit(self, stop_after_epochs: int | None = None) -> dict[str, Any]:
        """Train to `train.epochs` (or early stopping); `stop_after_epochs` ends this session
        early, as an interruption would (used to test resuming). Returns a summary dict."""
        cfg = self.config
        started = time.perf_counter()
        select_key = cfg.train.select_metric if cfg.train.select_metric.startswith("val_") else f"val_{cfg.train.select_metric}"
        epochs_run = 0
        last_row: dict[str, Any] = {}
        stopped_early = False
        self._say(f"training {cfg.model.name} on {self.data_root} ({len(self.train_ds)} train / {len(self.val_ds)} val "
                  f"images, {self.task.kind}, {self.task.num_classes} classes) on {self.device}"
                  f"{' x' + str(self.dist.world_size) if self.dist.enabled else ''}, "
                  f"precision {self.precision.dtype or 'fp32'}{', channels_last' if self.precision.channels_last else ''}")
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                    break
                self._begin_epoch(epoch)
                progress = Progress(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.train.epochs}",
                                    enabled=self.verbose and self.dist.is_main, every=cfg.train.log_every)
                try:
                    result = train_one_epoch(
                        self.net, self.train_loader, self.loss_fn, self.optimizer, self.scheduler,
                        device=self.device, precision=self.precision, scaler=self.scaler,
                        grad_clip=cfg.train.grad_clip, accumulate=cfg.train.accumulate,
                        max_steps=cfg.train.max_steps_per_epoch, on_step=progress.update, epoch=epoch)
                finally:
                    progress.close()
                self.global_step += result.steps
                self.step_losses += result.step_losses
                epochs_run += 1
                train_loss = float(D.all_reduce_sum(torch.tensor([result.loss], dtype=torch.float64))[0]) / self.dist.world_size
                row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss,
                                       "lr": self.optimizer.param_groups[0]["lr"],
                                       "images_per_second": result.images_per_second * self.dist.world_size,
                                       "epoch_seconds": result.seconds}
                validate = ((epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs
                            or (epoch == 0 and cfg.train.time_budget_minutes is not None))  # validation's cost
                if validate:
                    val_started = time.perf_counter()
                    row.update(self._validate())
                    row["val_seconds"] = time.perf_counter() - val_started
                    value = row.get(select_key)
                    if select_key not in row:
                        raise ConfigError(f"train.select_metric: {cfg.train.select_metric!r} is not a validation "
                                          f"metric; choose from {sorted(k[4:] for k in row if k.startswith('val_'))}")
                    if self._improved(value):
                        self.best_metric, self.best_epoch, self.bad_epochs = float(value), epoch + 1, 0
                        row["best"] = True
                    else:
                        self.bad_epochs += 1
                if "val_seconds" in row:
                    self._val_seconds = row["val_seconds"]
                if cfg.train.time_budget_minutes is not None and self.start_epoch == 0 and epoch < BUDGET_PLANNING_EPOCHS:
                    self._epoch_costs.append(result.seconds + self._val_seconds / cfg.train.val_every)
                    self._fit_to_budget(time.perf_counter() - started, epoch + 1)
                    row["planned_epochs"] = cfg.train.epochs
                last_row = row
                self.logger.log_epoch(row)
                self._say(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                if self.dist.is_main:
                    ckpt = self._checkpoint(epoch + 1, row)
                    save_checkpoint(self.checkpoint_dir / "last.pt", ckpt)
                    if row.get("best"):
                        copy_checkpoint(self.checkpoint_dir / "last.pt", self.checkpoint_dir / "best.pt")
                D.barrier()
                if epoch + 1 >= cfg.train.epochs:  # the time budget may have shortened the plan
                    break
                patience = cfg.train.early_stopping.patience
                if patience is not None and validate and self.bad_epochs >= patience:
                    self._say(f"early stopping: no {select_key} improvement for {patience} validations")
                    stopped_early = True
                    break
        except NonFiniteLossError:
            self.logger.close()
            raise
        finished = stopped_early or (self.start_epoch + epochs_run >= cfg.train.epochs)
        summary = {"run_dir": str(self.run_dir), "epochs_run": epochs_run, "finished": finished,
                   "best_metric": self.best_metric, "best_epoch": self.best_epoch, "select_metric": select_key,
                   "last": last_row, "train_seconds": time.perf_counter() - started}
        if finished and self.dist.is_main:
            self._finalize(summary)
        self.logger.close()
        return summary

    def _fit_to_budget(self, elapsed: float, epochs_done: int) -> None:
        """Set train.epochs to what fits train.time_budget_minutes and stretch the LR schedule
        over the new length so it still decays to its end. Called after each of the first
        BUDGET_PLANNING_EPOCHS epochs: epoch 1 carries one-off costs (kernel selection, cold
        file cache) and a busy machine can slow any one epoch, so the plan uses the time
        already spent plus the remaining budget at the fastest later epoch's pace.
        The plan is saved in config.yaml and the checkpoints, so a resumed run keeps it."""
        cfg = self.config
        budget = cfg.train.time_budget_minutes * 60
        costs = self._epoch_costs[1:] or self._epoch_costs
        # Every process must take the same decision: use rank 0's measurements.
        measured = D.all_reduce_sum(torch.tensor([elapsed, min(costs)] if self.dist.is_main else [0.0, 0.0],
                                                 dtype=torch.float64))
        elapsed, pace = float(measured[0]), max(float(measured[1]), 1e-9)
        fits = max(epochs_done, epochs_done + int(max(budget - elapsed, 0.0) // pace))
        fits = min(fits, self._epoch_cap)
        if fits == cfg.train.epochs:
            return
        self._say(f"time budget {cfg.train.time_budget_minutes:g} min: {elapsed:.0f} s spent on {epochs_done} "
                  f"epoch(s), {pace:.0f} s per epoch from here, so training {fits} epochs "
                  f"(upper bound {self._epoch_cap})")
        cfg.train.epochs = fits
        self.scheduler.lr_lambdas[0] = lr_factor(cfg.schedule, fits * self.steps_per_epoch)
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")

    def _finalize(self, summary: dict[str, Any]) -> None:
        """Deployment weights and run.json; the best checkpoint (or last, if none was best)."""
        best = self.checkpoint_dir / "best.pt"
        source = best if best.is_file() else self.checkpoint_dir / "last.pt"
        save_safetensors(self.run_dir / "model.safetensors", load_checkpoint(source))
        n_params = sum(p.numel() for p in self.model.parameters())
        run = {
            "command": self.command,
            "wall_seconds": summary["train_seconds"],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "hardware": collect_environment(self.device),
            "world_size": self.dist.world_size,
            "precision": {"autocast": str(self.precision.dtype) if self.precision.dtype else "fp32",
                          "channels_last": self.precision.channels_last},
            "dataset": {"root": self.data_root, "train_images": len(self.train_ds), "val_images": len(self.val_ds),
                        "classes": list(self.classes.names), "task": self.task.to_dict()},
            "model": {**self.model_spec, "parameters": n_params},
            "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "best_metric": {summary["select_metric"]: summary["best_metric"]},
            "images_per_second": summary["last"].get("images_per_second"),
        }
        atomic.write_text(self.run_dir / "run.json", json.dumps(run, indent=2, default=str))


def train(config: Config, run_dir: str | Path, *, resume: bool = False, verbose: bool = True,
          evaluate_test: bool = True, save_predictions: int = 0, command: str | None = None) -> dict[str, Any]:
    """Train a run, then score the best checkpoint on `data.test_split` (RUN_DIR/eval/, with
    predictions and overlays of the first `save_predictions` test images). `command` is
    recorded in run.json. The report is the workflow layer's step
    (`pixelwise.workflows.train_test_report`): training does not import the report."""
    trainer = Trainer(config, run_dir, resume=resume, verbose=verbose, command=command)
    try:
        summary = trainer.fit()
        test_split = config.data.test_split
        if evaluate_test and summary["finished"] and test_split:
            from pixelwise.training.evaluation import evaluate_checkpoint, split_exists

            if split_exists(trainer.data_root, test_split):
                summary["test"] = evaluate_checkpoint(Path(run_dir), data=trainer.data_root, split=test_split,
                                                      limit=config.data.limit, device=str(trainer.device), amp=config.train.amp,
                                                      num_workers=config.data.num_workers,
                                                      save_predictions=save_predictions, verbose=verbose)
    finally:
        D.barrier()
    return summary

