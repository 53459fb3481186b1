"""The quickstart: built-in data -> small model trained on the CPU -> evaluation -> files.

The recipes live here (not only in configs/) so an installed package runs them anywhere;
configs/quickstart.yaml and configs/quickstart_multilabel.yaml hold the same values.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from pixelwise.training.config import Config, apply_overrides, validate_config

QUICKSTART: dict[str, dict[str, Any]] = {
    "multiclass": {
        "data": {"root": "synthetic:shapes?n=320&size=96", "crop_size": 96, "batch_size": 16, "val_batch_size": 16,
                 "augment": {"scale": [0.75, 1.25], "rotate": 0.0, "blur": 0.0}},
        "model": {"name": "unet", "kwargs": {"base_channels": 16, "depth": 4}},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
        "schedule": {"name": "cosine", "warmup_steps": 20},
        "train": {"epochs": 30, "seed": 0, "log_every": 10},
    },
    "multilabel": {
        "data": {"root": "synthetic:wafer?n=1280&size=64", "batch_size": 32, "val_batch_size": 32,
                 "augment": {"scale": [1.0, 1.0], "rotate": 0.0, "blur": 0.0, "color_jitter": 0.0}},
        "model": {"name": "unet", "kwargs": {"base_channels": 16, "depth": 3}},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
        "schedule": {"name": "cosine", "warmup_steps": 20},
        "train": {"epochs": 30, "seed": 0, "loss": "bce+dice", "log_every": 10},
    },
}


def quickstart_config(task: str = "multiclass", overrides: list[str] | None = None) -> Config:
    """The quickstart recipe for `task` ("multiclass": shapes, "multilabel": wafer)."""
    import copy

    raw = copy.deepcopy(QUICKSTART[task])
    return validate_config(apply_overrides(raw, list(overrides or [])), f"quickstart ({task})")


QUICKSTART_MINUTES = 3.0   # the whole quickstart, on whatever machine runs it


def run_quickstart(out: str | Path = "runs/quickstart", task: str = "multiclass",
                   overrides: list[str] | None = None, verbose: bool = True,
                   command: str | None = None, minutes: float | None = None) -> dict[str, Any]:
    """Train, evaluate on the test split with predictions and overlays, write the report; print where.

    The recipe's data, model, loss and augmentation are kept; the planner (pixelwise.planning)
    measures this machine and fits the epochs and validation cadence into `minutes` (default
    3), never more epochs than the recipe's, and says up front about how long it will take.
    """
    import copy

    started = time.perf_counter()
    quickstart_config(task, overrides)  # a bad override fails here, before torch loads
    from pixelwise.planning import fixed_keys, plan_config
    from pixelwise.workflows.pipeline import train_test_report

    raw = apply_overrides(copy.deepcopy(QUICKSTART[task]), list(overrides or []))
    given = fixed_keys(apply_overrides({}, list(overrides or [])))
    recipe_epochs = raw["train"]["epochs"]
    if "train.epochs" not in given:
        del raw["train"]["epochs"]  # the planner's to fill, up to the recipe's
    raw["train"].setdefault("loss", "auto")  # the recipe's loss (CE), whose scores the docs quote
    budget = minutes or given.get("train.time_budget_minutes") or QUICKSTART_MINUTES
    config, plan = plan_config(raw, minutes=budget, max_epochs=recipe_epochs,
                               say=(lambda line: print(line, file=sys.stderr)) if verbose else (lambda line: None))
    if verbose and plan is not None:
        est = plan.estimate
        print(f"quickstart ({task}): about {max(est['total_seconds'] / 60, 0.1):.1f} minutes on this machine "
              f"(budget {budget:g}): {config.train.epochs} epochs of ~{est['epoch_seconds']:.1f} s, "
              f"{config.model.name} {config.model.kwargs}, validation every {config.train.val_every} epoch(s)",
              file=sys.stderr, flush=True)
    out = Path(out)
    # One pass does it all: training, the test split scored with predictions and overlays
    # (with the recipe's device, precision and loader settings), then the report.
    summary = train_test_report(config, out, verbose=verbose, save_predictions=16, command=command)
    result = summary.get("test")  # absent when an override sets data.test_split=null
    report = out / "report.html" if (out / "report.html").is_file() else None
    minutes = (time.perf_counter() - started) / 60
    if verbose:
        print(f"\nquickstart ({task}) done in {minutes:.1f} min", file=sys.stderr)
        test = f", test mIoU {result['miou']:.4f}" if result else ""
        print(f"  best validation mIoU {summary['best_metric']:.4f} (epoch {summary['best_epoch']}){test}",
              file=sys.stderr)
        print(f"  run folder    {out}", file=sys.stderr)
        print(f"  checkpoints   {out / 'checkpoints'}  (best.pt, last.pt; deployable: {out / 'model.safetensors'})",
              file=sys.stderr)
        print(f"  metrics       {out / 'metrics.csv'}, {out / 'eval' / 'metrics.json'}", file=sys.stderr)
        print(f"  predictions   {out / 'predictions'}  overlays {out / 'overlays'}", file=sys.stderr)
        if report is not None:
            print(f"  report        {report}", file=sys.stderr)
        print(f"  tensorboard   tensorboard --logdir {out / 'tensorboard'}", file=sys.stderr)
    return {"summary": summary, "test": result, "minutes": minutes}
