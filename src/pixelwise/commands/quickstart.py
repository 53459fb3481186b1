"""`pixelwise quickstart`: generate the built-in data, train a small model on the CPU, evaluate
it, and write predictions, overlays, the metrics table and the report into one run folder."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="train and evaluate a small model on built-in synthetic data (a few minutes on a CPU)",
        description="Trains a small U-Net on the synthetic 'shapes' set (multiclass) or 'wafer' set "
                    "(--task multilabel), evaluates it on the test split and writes everything into --out.")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="run folder (default runs/quickstart)")
    parser.add_argument("--task", choices=["multiclass", "multilabel"], default="multiclass")
    parser.add_argument("--minutes", type=float, help="time budget for the whole quickstart (default 3): the "
                                                      "planner fits the epochs to this machine's measured speed")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=2")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.workflows.quickstart import run_quickstart

    words = ["pixelwise", "quickstart", "--out", str(args.out), "--task", args.task]
    words += ["--minutes", f"{args.minutes:g}"] if args.minutes is not None else []
    run_quickstart(args.out, task=args.task, overrides=args.overrides, command=shlex.join(words + args.overrides),
                   minutes=args.minutes)
    return 0
