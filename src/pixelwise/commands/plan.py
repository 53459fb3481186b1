"""`pixelwise plan DATA [--minutes N] [key=value ...]`: the training plan for DATA on this
machine, its reasons and the measured throughput behind it, without training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="plan a training run for DATA and this machine (what `train DATA` would do)",
        description="Fingerprints DATA (sizes, class shares, object sizes, thin structures), measures "
                    "this machine's training and evaluation speed for each candidate model (at most 5%% of "
                    "the budget, cached per CPU model) and prints the recipe `pixelwise train DATA` would "
                    "use, with a reason per key.")
    parser.add_argument("--minutes", type=float, help="time budget (default 10)")
    parser.add_argument("--config", type=Path, help="YAML recipe whose keys are kept")
    parser.add_argument("--json", action="store_true", help="print the planned config (with its plan record) as JSON")
    parser.add_argument("overrides", nargs="*", metavar="DATA | KEY=VALUE",
                        help="the data folder or synthetic:... spec, then keys to keep, e.g. model.name=unet")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.commands.train import print_plan, split_data
    from pixelwise.errors import ConfigError
    from pixelwise.planning import plan_config
    from pixelwise.training.config import apply_overrides, read_config

    data, overrides = split_data(args.overrides)
    if data is None:
        raise ConfigError("give DATA: a data folder or a synthetic:... spec")
    raw = apply_overrides(read_config(args.config) if args.config else {}, overrides)
    raw.pop("plan", None)  # planning a recorded run again shows what it would be today
    config, plan = plan_config(raw, data=data, minutes=args.minutes)
    if args.json:
        print(json.dumps(config.to_dict(), indent=2, default=str))
    else:
        print_plan(config.plan, plan)
    return 0
