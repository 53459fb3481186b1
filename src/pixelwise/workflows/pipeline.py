"""train -> test -> report: one run folder from a config, as `pixelwise train` and the
quickstart produce it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pixelwise.training.config import Config


def train_test_report(config: Config, run_dir: str | Path, *, resume: bool = False, verbose: bool = True,
                      evaluate_test: bool = True, save_predictions: int = 0,
                      command: str | None = None) -> dict[str, Any]:
    """Train (`pixelwise.training.trainer.train`, which also scores the test split), then
    write RUN_DIR/report.html on the main process when the run finished. Returns train's summary."""
    from pixelwise.training.trainer import train

    summary = train(config, run_dir, resume=resume, verbose=verbose, evaluate_test=evaluate_test,
                    save_predictions=save_predictions, command=command)
    if summary.get("finished") and is_main_process():
        write_report_if_available(Path(run_dir), verbose)
    return summary


def write_report_if_available(run_dir: Path, verbose: bool = True) -> Path | None:
    """RUN_DIR/report.html through pixelwise.report.write_report, when that package is installed."""
    try:
        from pixelwise.report import write_report
    except ImportError:  # matplotlib (the report extra) missing: training results stand without it
        return None
    path = write_report(run_dir)
    if verbose:
        print(f"report: {path}", file=sys.stderr)
    return path


def is_main_process() -> bool:
    """Rank 0 under torch.distributed (or torchrun's RANK before init), True otherwise."""
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
