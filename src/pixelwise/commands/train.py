"""`pixelwise train [DATA] [--config FILE] --out RUN_DIR [--minutes N] [key=value ...]`.

With a config and no --minutes it trains the recipe as written. Given DATA without a config,
or --minutes, the planner (pixelwise.planning) fills every key the config and the overrides
leave open, prints the plan, and records it in RUN_DIR/config.yaml; --resume never re-plans.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model on DATA (planned for --minutes) or from a YAML recipe",
        description="`pixelwise train DATA --out RUN --minutes 8` plans the recipe from the data and this "
                    "machine's measured speed; `--config FILE` trains a YAML recipe (configs/*.yaml), and with "
                    "--minutes the planner fills only the keys it leaves open. Dotted overrides such as "
                    "train.epochs=3 optim.lr=0.01 are kept either way. Under torchrun it trains with DDP "
                    "(rank 0 plans and sends the plan to the others).")
    parser.add_argument("--config", type=Path, help="YAML recipe (optional: DATA alone is planned; "
                                                    "with --resume: RUN_DIR/config.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--minutes", type=float, help="time budget for the whole run; plans the keys not given "
                                                      "(default without --config: 10)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    parser.add_argument("--no-test", action="store_true", help="skip scoring the best checkpoint on the test split")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    parser.add_argument("overrides", nargs="*", metavar="DATA | KEY=VALUE",
                        help="the data folder or synthetic:... spec (a word without '='), then config overrides")
    parser.set_defaults(func=run)


def invocation(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, as a shell would read it (kept in run.json)."""
    words = ["pixelwise", "train"]
    if args.config is not None:
        words += ["--config", str(args.config)]
    words += ["--out", str(args.out)]
    if args.minutes is not None:
        words += ["--minutes", f"{args.minutes:g}"]
    words += [flag for flag, on in (("--resume", args.resume), ("--no-test", args.no_test)) if on]
    return shlex.join(words + list(args.overrides))


def split_data(words: list[str]) -> tuple[str | None, list[str]]:
    """(DATA, overrides): words shaped `section.key=value` are overrides, the one other word
    is the data (a folder, or a synthetic spec such as synthetic:shapes?n=40)."""
    import re

    from pixelwise.errors import ConfigError

    is_override = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=").match
    data = [w for w in words if not is_override(w)]
    if len(data) > 1:
        raise ConfigError(f"expected one DATA argument and key=value overrides, got {' '.join(data)}")
    return (data[0] if data else None), [w for w in words if is_override(w)]


def run(args: argparse.Namespace) -> int:
    from pixelwise.errors import ConfigError
    from pixelwise.metrics import jsonable
    from pixelwise.training.config import apply_overrides, load_config, read_config
    from pixelwise.workflows import train_test_report

    data, overrides = split_data(args.overrides)
    config_path = args.config
    if args.resume:  # the recorded config, plan included: a resumed run is never planned again
        config = load_config(config_path or args.out / "config.yaml", overrides)
        if data is not None and data != config.data.root:
            raise ConfigError(f"--resume continues on {config.data.root}; drop DATA or start a new run folder")
    elif config_path is None and data is None:
        raise ConfigError("give DATA (a folder or synthetic:...) to plan a run, or --config FILE")
    elif config_path is not None and args.minutes is None and data is None:
        config = load_config(config_path, overrides)
    else:
        from pixelwise.planning import plan_config

        raw = apply_overrides(read_config(config_path) if config_path else {}, overrides)
        config, plan = plan_config(raw, data=data, minutes=args.minutes)
        if plan is not None and _is_main():
            print_plan(config.plan, plan)
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


def print_plan(record: dict, plan) -> None:
    """The plan, its reasons and the measured throughput behind it (stderr, before training)."""
    from pixelwise.planning.fingerprint import Fingerprint

    out = sys.stderr
    for line in Fingerprint.from_dict(record["fingerprint"]).describe():
        print(line, file=out)
    source = "cached" if record["speeds_from_cache"] else f"measured in {record['probe_seconds']:.1f} s"
    print(f"throughput on {record['machine']} ({source}), images/s at "
          f"{next(iter(record['speeds'].values()))['size']}px:", file=out)
    for key, speed in record["speeds"].items():
        print(f"  {key:<20} train {speed['train']:8.1f}   eval {speed['eval']:8.1f}", file=out)
    print(f"plan for {record['budget_minutes']:g} min ({plan.train_minutes:g} min of training):", file=out)
    for line in plan.lines():
        print("  " + line, file=out)
    out.flush()


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
