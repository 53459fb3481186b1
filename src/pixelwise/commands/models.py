"""`pixelwise models`: list the registered architectures with parameter counts."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the available model architectures",
                                   description="List registered models: name, parameters (at 21 classes, RGB) "
                                               "and what each is.")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--num-classes", type=int, default=21, help="classes used to count parameters (default 21)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.errors import ConfigError
    from pixelwise.models import list_models, model_info

    if args.num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1, got {args.num_classes}")
    infos = [model_info(name, num_classes=args.num_classes) for name in list_models()]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    width = max(len(info["name"]) for info in infos)
    print(f"{'name':<{width}}  {'params':>8}  description")
    for info in infos:
        print(f"{info['name']:<{width}}  {info['params'] / 1e6:>7.2f}M  {info['description']}")
    return 0
