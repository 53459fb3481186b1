"""`pixelwise train --config FILE --out RUN_DIR [key=value ...]`: train from a YAML recipe."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model from a YAML recipe",
        description="Train from a YAML recipe (configs/*.yaml) plus dotted overrides such as "
                    "train.epochs=3 optim.lr=0.01 data.root=PATH. Under torchrun it trains with DDP.")
    parser.add_argument("--config", type=Path, help="YAML recipe (optional with --resume: RUN_DIR/config.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    parser.add_argument("--no-test", action="store_true", help="skip scoring the best checkpoint on the test split")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


def invocation(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, as a shell would read it (kept in run.json)."""
    words = ["pixelwise", "train"]
    if args.config is not None:
        words += ["--config", str(args.config)]
    words += ["--out", str(args.out)]
    words += [flag for flag, on in (("--resume", args.resume), ("--no-test", args.no_test)) if on]
    return shlex.join(words + list(args.overrides))


def run(args: argparse.Namespace) -> int:
    from pixelwise.errors import ConfigError
    from pixelwise.metrics import jsonable
    from pixelwise.training.config import load_config
    from pixelwise.workflows import train_test_report

    config_path = args.config
    if config_path is None:
        if not args.resume:
            raise ConfigError("--config FILE is required (except with --resume, which reads RUN_DIR/config.yaml)")
        config_path = args.out / "config.yaml"
    config = load_config(config_path, args.overrides)
    from pixelwise.training.distributed import cleanup

    try:
        summary = train_test_report(config, args.out, resume=args.resume, evaluate_test=not args.no_test,
                                    command=invocation(args))
    finally:
        cleanup()
    if not _is_main():
        return 0
    if args.json:
        print(json.dumps(jsonable(summary), indent=2))
    else:
        best = summary["best_metric"]
        print(f"run folder: {args.out}")
        if best is not None:
            print(f"best {summary['select_metric']}: {best:.4f} (epoch {summary['best_epoch']})")
        if "test" in summary:
            t = summary["test"]
            print(f"test: mIoU {t['miou']:.4f}, pixel accuracy {t['pixel_accuracy']:.4f}, "
                  f"mean accuracy {t['mean_accuracy']:.4f} ({t['num_images']} images)")
            if t.get("task") == "binary":  # the foreground class is what binary tasks report
                name, scores = list(t["per_class"].items())[-1]
                print(f"test {name}: IoU {scores['iou']:.4f}, Dice {scores['dice']:.4f}")
    sys.stdout.flush()
    return 0


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
