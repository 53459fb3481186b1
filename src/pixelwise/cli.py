"""The `pixelwise` command: collects the subcommands and turns user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from pixelwise import __version__
from pixelwise.commands import COMMAND_MODULES
from pixelwise.errors import PixelwiseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixelwise",
        description="Semantic segmentation: data checks, training, evaluation, prediction, export, reports, serving.",
    )
    parser.add_argument("--version", action="version", version=f"pixelwise {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"pixelwise.commands.{name}")
        except ModuleNotFoundError as exc:
            # A command module not written yet must not break the others.
            if exc.name == f"pixelwise.commands.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills a `nargs="*"` positional once, so `train DATA --minutes 8 k=v` leaves k=v
    # over: words after the options still belong to the command's positional list.
    if extra and isinstance(getattr(args, "overrides", None), list) and not any(w.startswith("-") for w in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except PixelwiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `pixelwise models | head` closed our stdout early: not an error worth a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
