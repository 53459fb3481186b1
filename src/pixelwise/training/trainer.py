"""The Trainer: runs the plain functions of `loop.py` over parts built by `builders.py`.

    parts = build_parts(config, runtime)        # data, model, loss, optimizer (builders.py)
    Trainer(config, run_dir, parts).fit()       # epochs, validation, checkpoints, logs

The recipe is read, never written: what a run derives while it trains (epochs done, the
best metric, the epoch count a time budget plans) lives in a `TrainState` (state.py) that
goes into every checkpoint. Each concern of `fit` is one small method: an epoch of
training, validation with model selection, early stopping, the time budget,
checkpointing, logging.

Reproducibility: every epoch starts by re-seeding torch, numpy, python `random`, the
loader's shuffle and the augmentations from (seed, epoch, rank). A run resumed from
`last.pt` therefore replays exactly the batches and augmentations an uninterrupted run
would have seen; the RNG states are stored in the checkpoint as well, as the format asks.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelwise import atomic
from pixelwise.errors import CheckpointError, ConfigError
from pixelwise.runtime import Runtime, resolve_runtime
from pixelwise.training import distributed as D
from pixelwise.training.builders import TrainParts, base_dataset, build_parts, build_scheduler
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
from pixelwise.training.loop import NonFiniteLossError, evaluate, train_one_epoch
from pixelwise.training.state import TrainState, improved, plan_epochs, validation_due

# A time budget's epoch count is re-planned after each of this many first epochs.
BUDGET_PLANNING_EPOCHS = 3


# ----------------------------------------------------------------------------- helpers
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


def collect_environment(device: torch.device) -> dict[str, Any]:
    """Hardware and versions for run.json."""
    from pixelwise import __version__

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
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


def path_for_record(root: str, base: Path) -> str:
    """A data folder as written in run.json: relative to `base` (the run folder), so no
    machine's absolute layout is recorded; synthetic specs unchanged."""
    if root.startswith("synthetic:"):
        return root
    folder, sep, query = root.partition("?")  # annotation options (coco.json?images=ROOT) stay as given
    if Path(root).exists():
        folder, sep, query = root, "", ""
    return os.path.relpath(Path(folder).resolve(), Path(base).resolve()) + sep + query


class TimeBudget:
    """train.time_budget_minutes: after each of the first BUDGET_PLANNING_EPOCHS epochs of a
    fresh run, re-plan the run's epoch count (`plan_epochs`) from the measured cost of an
    epoch (training plus validation's share). The LR schedule follows the plan by itself."""

    def __init__(self, minutes: float, max_epochs: int, val_every: int):
        self.seconds = minutes * 60
        self.minutes = minutes
        self.max_epochs = max_epochs
        self.val_every = val_every
        self.val_seconds = 0.0  # the last validation's cost

    def replan(self, state: TrainState, epoch: int, train_seconds: float, val_seconds: float | None,
               elapsed: float, dist: D.DistInfo) -> str | None:
        """Update `state.planned_epochs` after 0-based `epoch`; a message when the plan changed."""
        if val_seconds is not None:
            self.val_seconds = val_seconds
        state.epoch_seconds.append(train_seconds + self.val_seconds / self.val_every)
        planned = plan_epochs(budget_seconds=self.seconds, elapsed_seconds=elapsed,
                              epoch_seconds=state.epoch_seconds, epochs_done=epoch + 1, max_epochs=self.max_epochs)
        # Every process must take the same decision: rank 0's plan.
        planned = int(D.all_reduce_sum(torch.tensor([planned if dist.is_main else 0], dtype=torch.float64))[0])
        if planned == state.planned_epochs:
            return None
        state.planned_epochs = planned
        pace = min(state.epoch_seconds[1:] or state.epoch_seconds)
        return (f"time budget {self.minutes:g} min: {elapsed:.0f} s spent on {epoch + 1} epoch(s), "
                f"{pace:.0f} s per epoch from here, so training {planned} epochs (upper bound {self.max_epochs})")


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """`Trainer(config, run_dir).fit()` trains, validates, checkpoints and logs one run.

    `parts` (data, model, loss, optimizer) are built from `config` when not given;
    `runtime` (device, precision, channels_last) is resolved from `config.train` likewise.
    """

    def __init__(self, config: Config, run_dir: str | Path, parts: TrainParts | None = None, *,
                 runtime: Runtime | None = None, resume: bool = False, verbose: bool = True,
                 command: str | None = None):
        cfg = self.config = config
        self.command = command  # the command line that started this session, kept in run.json
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.verbose = verbose
        self.runtime = runtime or resolve_runtime(cfg.train.device, cfg.train.precision, cfg.train.channels_last)
        self.device = self.runtime.device
        self.dist = D.init_distributed(self.device)
        self.step_losses: list[float] = []   # every optimizer step of this session (tests, plots)
        seed_everything(cfg.train.seed)
        parts = parts or build_parts(cfg, self.runtime, self.dist, self._say)
        self.parts = parts
        self.data = parts.data
        self.model, self.loss_fn, self.optimizer = parts.model, parts.loss_fn, parts.optimizer
        self.steps_per_epoch = parts.steps_per_epoch
        self.pretrained = parts.pretrained  # catalogue weights the encoder started from, or None
        self.net = D.wrap_model(self.model, self.dist, self.device, cfg.train.sync_batchnorm)
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        self.state = TrainState(planned_epochs=cfg.train.epochs)
        # The schedule reads the planned length at every step, so a time budget's new plan
        # stretches it without touching the scheduler.
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule,
                                         lambda: self.state.planned_epochs * self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if self.runtime.precision == "fp16" else None
        budget = cfg.train.time_budget_minutes
        self.budget = TimeBudget(budget, cfg.train.epochs, cfg.train.val_every) if budget is not None else None
        self.checkpoint_dir = self.run_dir / "checkpoints"
        if resume:
            self._resume(self.checkpoint_dir / "last.pt")
        self.start_epoch = self.state.epoch
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, resume=resume)
        if resume:
            self.logger.truncate_after(self.start_epoch)
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            for stale in remove_interrupted_saves(self.checkpoint_dir):
                self._say(f"removed {stale.name}, left by a save that was interrupted")

    # Views of the built parts, by the names the rest of the package uses.
    task = property(lambda self: self.data.task)
    classes = property(lambda self: self.data.classes)
    train_ds = property(lambda self: self.data.train_ds)
    val_ds = property(lambda self: self.data.val_ds)
    data_root = property(lambda self: self.data.root)
    model_spec = property(lambda self: self.parts.model_spec)

    def _say(self, message: str) -> None:
        if self.verbose and self.dist.is_main:
            print(message, file=sys.stderr, flush=True)

    # ------------------------------------------------------------ checkpoints
    def _checkpoint(self, metrics: dict[str, Any]) -> dict[str, Any]:
        data = self.data
        return {
            "model": self.model_spec,
            "task": data.task.to_dict(),
            "classes": {"names": list(data.classes.names), "colors": [list(c) for c in data.classes.colors],
                        "ignore_index": int(data.classes.ignore_index)},
            "preprocess": {"mean": data.mean, "std": data.std, "in_channels": data.in_channels,
                           "crop_size": self.config.data.crop_size},
            "pretrained": self.pretrained.record() if self.pretrained is not None else None,
            "state_dict": unwrapped_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            **self.state.to_checkpoint(),
            "rng": capture_rng_state(),
            "metrics": metrics,
            "config": self.config.to_dict(),
        }

    def _save(self, row: dict[str, Any]) -> None:
        """RUN_DIR/checkpoints/last.pt after every epoch; best.pt copied from it on a new best."""
        if self.dist.is_main:
            save_checkpoint(self.checkpoint_dir / "last.pt", self._checkpoint(row))
            if row.get("best"):
                copy_checkpoint(self.checkpoint_dir / "last.pt", self.checkpoint_dir / "best.pt")
        D.barrier()

    def _resume(self, path: Path) -> None:
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
        # A budget's plan is kept; without a budget the recipe's train.epochs may extend the run.
        self.state = TrainState.from_checkpoint(ckpt, self.config.train.epochs, keep_plan=self.budget is not None)
        restore_rng_state(ckpt["rng"])
        self._say(f"resumed from {path} after epoch {self.state.epoch}")

    # ------------------------------------------------------------------ epochs
    def _begin_epoch(self, epoch: int) -> None:
        seed = epoch_seed(self.config.train.seed, epoch, self.dist.rank)
        seed_everything(seed)
        loader = self.data.train_loader
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        generator = getattr(loader, "generator", None)
        if generator is not None:
            generator.manual_seed(seed)
        reseed_transforms(getattr(base_dataset(self.data.train_ds), "transform", None), seed)

    def _train_epoch(self, epoch: int) -> tuple[dict[str, Any], float]:
        """One epoch of optimizer steps: (its log row, its training seconds)."""
        cfg = self.config
        self._begin_epoch(epoch)
        progress = Progress(self.steps_per_epoch, f"epoch {epoch + 1}/{self.state.planned_epochs}",
                            enabled=self.verbose and self.dist.is_main, every=cfg.train.log_every)
        try:
            result = train_one_epoch(
                self.net, self.data.train_loader, self.loss_fn, self.optimizer, self.scheduler,
                device=self.device, runtime=self.runtime, scaler=self.scaler,
                grad_clip=cfg.train.grad_clip, accumulate=cfg.train.accumulate,
                max_steps=cfg.train.max_steps_per_epoch, on_step=progress.update, epoch=epoch)
        finally:
            progress.close()
        self.state.global_step += result.steps
        self.step_losses += result.step_losses
        train_loss = float(D.all_reduce_sum(torch.tensor([result.loss], dtype=torch.float64))[0]) / self.dist.world_size
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": self.optimizer.param_groups[0]["lr"],
               "images_per_second": result.images_per_second * self.dist.world_size,
               "epoch_seconds": result.seconds}
        return row, result.seconds

    def _validate(self) -> dict[str, Any]:
        """Validation loss and metrics (val_miou, ...) over the whole val split, plus its seconds."""
        started = time.perf_counter()
        result = evaluate(self.net, self.data.val_loader, self.task, device=self.device, runtime=self.runtime,
                          loss_fn=self.loss_fn)
        from pixelwise.metrics import summarize

        summary = summarize(result["confusion"].matrix, list(self.classes.names))
        return {"val_loss": result["loss"],
                **{f"val_{k}": summary[k] for k in ("miou", "pixel_accuracy", "mean_accuracy", "mean_dice", "fwiou")},
                "val_seconds": time.perf_counter() - started}

    def _select(self, row: dict[str, Any], select_key: str) -> None:
        """Model selection and early-stopping counters from a validated row (marks row["best"])."""
        if select_key not in row:
            raise ConfigError(f"train.select_metric: {self.config.train.select_metric!r} is not a validation "
                              f"metric; choose from {sorted(k[4:] for k in row if k.startswith('val_'))}")
        value = row[select_key]
        stopping = self.config.train.early_stopping
        if improved(value, self.state.best_metric, mode=self.config.train.select_mode, min_delta=stopping.min_delta):
            self.state.best_metric, self.state.best_epoch, self.state.bad_epochs = float(value), row["epoch"], 0
            row["best"] = True
        else:
            self.state.bad_epochs += 1

    def _should_stop_early(self, validated: bool) -> bool:
        patience = self.config.train.early_stopping.patience
        return patience is not None and validated and self.state.bad_epochs >= patience

    def _log(self, row: dict[str, Any]) -> None:
        self.logger.log_epoch(row)
        self._say(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    def fit(self, stop_after_epochs: int | None = None) -> dict[str, Any]:
        """Train to the planned epochs (train.epochs, or fewer under a time budget) or until
        early stopping; `stop_after_epochs` ends this session early, as an interruption would
        (used to test resuming). Returns a summary dict."""
        cfg, state = self.config, self.state
        started = time.perf_counter()
        select_key = cfg.train.select_metric if cfg.train.select_metric.startswith("val_") else f"val_{cfg.train.select_metric}"
        epochs_run = 0
        last_row: dict[str, Any] = {}
        stopped_early = False
        self._say(f"training {cfg.model.name} on {self.data_root} ({len(self.train_ds)} train / {len(self.val_ds)} val "
                  f"images, {self.task.kind}, {self.task.num_classes} classes) on {self.device}"
                  f"{' x' + str(self.dist.world_size) if self.dist.enabled else ''}, {self.runtime.describe()}")
        try:
            while state.epoch < state.planned_epochs:
                if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                    break
                epoch = state.epoch
                row, train_seconds = self._train_epoch(epoch)
                epochs_run += 1
                validated = validation_due(epoch, every=cfg.train.val_every, planned_epochs=state.planned_epochs,
                                           budgeted=self.budget is not None)
                if validated:
                    row.update(self._validate())
                    self._select(row, select_key)
                if self.budget is not None and self.start_epoch == 0 and epoch < BUDGET_PLANNING_EPOCHS:
                    note = self.budget.replan(state, epoch, train_seconds, row.get("val_seconds"),
                                              time.perf_counter() - started, self.dist)
                    if note:
                        self._say(note)
                    row["planned_epochs"] = state.planned_epochs
                state.epoch = epoch + 1
                last_row = row
                self._log(row)
                self._save(row)
                if state.epoch < state.planned_epochs and self._should_stop_early(validated):
                    self._say(f"early stopping: no {select_key} improvement for "
                              f"{cfg.train.early_stopping.patience} validations")
                    stopped_early = True
                    break
        except NonFiniteLossError:
            self.logger.close()
            raise
        finished = stopped_early or state.epoch >= state.planned_epochs
        summary = {"run_dir": str(self.run_dir), "epochs_run": epochs_run, "finished": finished,
                   "planned_epochs": state.planned_epochs,
                   "best_metric": state.best_metric, "best_epoch": state.best_epoch, "select_metric": select_key,
                   "last": last_row, "train_seconds": time.perf_counter() - started}
        if finished and self.dist.is_main:
            self._finalize(summary)
        self.logger.close()
        return summary

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
            "precision": self.runtime.to_dict(),
            "dataset": {"root": path_for_record(self.data_root, self.run_dir), "train_images": len(self.train_ds),
                        "val_images": len(self.val_ds), "classes": list(self.classes.names),
                        "task": self.task.to_dict()},
            "model": {**self.model_spec, "parameters": n_params},
            "epochs_run": summary["epochs_run"],
            "planned_epochs": summary["planned_epochs"],
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
                                                      limit=config.data.limit, device=str(trainer.device), precision=trainer.runtime.precision,
                                                      channels_last="on" if trainer.runtime.channels_last else "off",
                                                      num_workers=config.data.num_workers,
                                                      save_predictions=save_predictions, verbose=verbose)
    finally:
        D.barrier()
    return summary

