"""`pixelwise data check PATH`, `pixelwise data stats PATH` and `pixelwise data convert SRC --to FORMAT`."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check a data set or print its statistics")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="report every problem in a data folder; exit 1 if there are errors")
    check.add_argument("path", help="data folder (any supported layout) or synthetic:shapes / synthetic:wafer")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=run_check)
    stats = sub.add_parser("stats", help="counts, sizes, class shares, mean/std, suggested task, weights, crop")
    stats.add_argument("path", help="data folder (any supported layout) or synthetic:shapes / synthetic:wafer")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.add_argument("--no-mean-std", action="store_true", help="skip the mean/std pass over the images")
    stats.set_defaults(func=run_stats)
    conv = sub.add_parser("convert", help="masks <-> annotations: write SRC as masks, COCO, LabelMe or CVAT")
    conv.add_argument("src", help="data folder or annotation export (COCO/LabelMe/CVAT/Label Studio)")
    conv.add_argument("--to", required=True, choices=("masks", "coco", "labelme", "cvat"))
    conv.add_argument("--out", required=True, help="output folder")
    conv.add_argument("--images", help="where the annotations' images are, if not beside them")
    conv.add_argument("--labels", help="labels file (classes.json/yaml or labels.txt) fixing the class ids")
    conv.add_argument("--line-width", type=float, help="width in pixels for lines and polylines (default 1)")
    conv.add_argument("--tolerance", type=float, default=0.0,
                      help="polygon simplification in pixels (0: exact, vertices on pixel corners)")
    conv.set_defaults(func=run_convert)
    from pixelwise.commands.audit import register_data_action  # `data audit` lives in its own module

    register_data_action(sub)


def run_check(args: argparse.Namespace) -> int:
    from pixelwise.data.check import check_data

    report = check_data(args.path)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.summary())
    return 0 if report.ok else 1


def run_convert(args: argparse.Namespace) -> int:
    from pixelwise.data.annotations.convert import convert, with_options

    src = with_options(args.src, images=args.images, labels=args.labels, line_width=args.line_width)
    counts = convert(src, args.to, args.out, args.tolerance, progress=print)
    print(f"wrote {counts['images']} images" + (f", {counts['annotations']} annotations" if args.to != "masks" else "")
          + f" as {args.to} to {counts['out']}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from pixelwise.data.stats import compute_stats, format_stats

    stats = compute_stats(args.path, mean_std=not args.no_mean_std)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0
