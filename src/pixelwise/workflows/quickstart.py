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


def run_quickstart(out: str | Path = "runs/quickstart", task: str = "multiclass",
                   overrides: list[str] | None = None, verbose: bool = True,
                   command: str | None = None) -> dict[str, Any]:
    """Train, evaluate on the test split with predictions and overlays, write the report; print where."""
    started = time.perf_counter()
    config = quickstart_config(task, overrides)  # a bad override fails here, before torch loads
    from pixelwise.workflows.pipeline import train_test_report

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
