"""`pixelwise evaluate CHECKPOINT_OR_RUN_DIR --data SPEC --split test`: score a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixelwise.commands.runtime_args import add_backend_argument, add_runtime_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a checkpoint on a data split",
        description="Dataset-level and per-image metrics with bootstrap intervals, the per-class "
                    "table and the confusion matrix; files go to RUN_DIR/eval (or --out).")
    parser.add_argument("source", type=Path, help="checkpoint file or run folder (uses best.pt)")
    parser.add_argument("--data", help="data folder or synthetic spec (default: the training data)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/eval)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_runtime_arguments(parser)
    add_backend_argument(parser)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--save-predictions", type=int, default=0, metavar="N",
                        help="also write predictions/ and overlays/ for the first N images")
    parser.add_argument("--tta", help="test-time augmentation, e.g. 'hflip' or 'hflip,scale:0.75,1.0,1.25'")
    parser.add_argument("--uncalibrated", action="store_true",
                        help="ignore a temperature stored by `pixelwise calibrate` (to compare ECE)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.metrics import jsonable
    from pixelwise.checkpoint import resolve_checkpoint
    from pixelwise.training.evaluation import evaluate_checkpoint
    from pixelwise.workflows import write_report_if_available

    result = evaluate_checkpoint(args.source, data=args.data, split=args.split, out_dir=args.out,
                                 batch_size=args.batch_size, device=args.device, precision=args.precision,
                                 channels_last=args.channels_last, limit=args.limit,
                                 num_workers=args.num_workers, save_predictions=args.save_predictions,
                                 verbose=not args.json, tta=args.tta, calibrated=not args.uncalibrated,
                                 backend=args.backend)
    if args.json:
        print(json.dumps(jsonable(result), indent=2))
    from pixelwise.training.distributed import cleanup

    _, run_dir = resolve_checkpoint(args.source)
    if args.out is None and (run_dir / "config.yaml").is_file() and _is_main():
        write_report_if_available(run_dir, verbose=not args.json)
    cleanup()
    return 0


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
