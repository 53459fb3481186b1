"""`pixelwise calibrate RUN`: fit a temperature on the validation split and store it in the checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="fit a temperature so probabilities match accuracy (stored in the checkpoint)",
        description="Temperature scaling: one temperature fitted by NLL on sampled validation pixels, "
                    "stored in the checkpoint (and model.safetensors); evaluate, predict, serve and export "
                    "apply it. A scalar temperature never changes an argmax label.")
    parser.add_argument("source", type=Path, help="run folder (uses best.pt) or checkpoint file")
    parser.add_argument("--data", help="data folder or synthetic spec (default: the training data)")
    parser.add_argument("--split", default="val", help="split to fit on (default val; never the test split you report)")
    parser.add_argument("--max-pixels", type=int, default=2_000_000,
                        help="uniform sample of at most this many labelled pixels (default 2000000)")
    parser.add_argument("--per-label", action="store_true",
                        help="one temperature per output channel (binary and multilabel tasks only)")
    parser.add_argument("--limit", type=int, help="only the first N images of the split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pixel sample")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the stored calibration entry as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.metrics import jsonable
    from pixelwise.training.calibration import calibrate_checkpoint

    entry = calibrate_checkpoint(args.source, data=args.data, split=args.split, max_pixels=args.max_pixels,
                                 per_label=args.per_label, device=args.device, limit=args.limit, seed=args.seed,
                                 num_workers=args.num_workers, verbose=not args.json)
    if args.json:
        print(json.dumps(jsonable(entry), indent=2))
    return 0
