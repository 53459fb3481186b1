"""`pixelwise report RUN_DIR`: write RUN_DIR/report.html and RUN_DIR/plots/*.png."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of a run (curves, per-class scores, gallery)",
        description="Write RUN_DIR/report.html (plots embedded) and RUN_DIR/plots/*.png. "
        "Works on partial runs and lists what is missing.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `pixelwise train`")
    parser.add_argument("-o", "--output", default=None, help="where to write the HTML (default RUN_DIR/report.html)")
    parser.add_argument("--gallery-size", type=int, default=4, help="best and worst images to show (default 4 each)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.report import write_report

    path = write_report(args.run_dir, output=args.output, gallery_size=args.gallery_size)
    print(path)
    return 0
