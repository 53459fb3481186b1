"""`pixelwise predict MODEL INPUTS... --out DIR`: label maps, overlays, probabilities, a CSV."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict label maps for image files, folders or globs",
        description="Run a checkpoint (.pt) or an exported .onnx model over images. Writes OUT/labels/*.png "
                    "(palette PNGs, pixel = class id), OUT/overlays/*.png, optional OUT/probs/, and "
                    "OUT/class_shares.csv. Unreadable files are skipped and listed; the exit status is 1 "
                    "if any failed.",
    )
    p.add_argument("model", help="checkpoint .pt (e.g. RUN_DIR/checkpoints/best.pt), a run folder, or an .onnx file")
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--probs", choices=["npy", "png8", "png16"], default=None,
                   help="also write probabilities: .npy float16 (K,H,W), or one 8/16-bit PNG per class")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlays")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5)")
    p.add_argument("--tta", default=None, help="test-time augmentation, e.g. 'hflip,vflip,scale:0.75,1.0,1.25'")
    p.add_argument("--tile", type=int, default=512, help="tile size for large images (default 512)")
    p.add_argument("--overlap", type=int, default=128, help="tile overlap in pixels (default 128)")
    p.add_argument("--blend", choices=["gaussian", "linear"], default="gaussian", help="tile blending window")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="images with more pixels than this are tiled (default 1048576)")
    p.add_argument("--batch-size", type=int, default=4, help="same-size images per forward pass (default 4)")
    p.add_argument("--tile-batch-size", type=int, default=None,
                   help="tiles per forward pass for large images (default: 1 on CPU, 4 on GPU; bounds memory)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (checkpoints only)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast precision (checkpoints only; auto = bf16 where it is fast)")
    p.add_argument("--windowed", action="store_true",
                   help="read every TIFF input window by window and write a tiled GeoTIFF label map "
                        "(automatic for TIFFs over 8192x8192 pixels); resumes after a kill")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _resolve_model_path(text: str):
    from pathlib import Path

    from pixelwise.checkpoint import resolve_checkpoint

    path = Path(text)
    if path.is_dir():  # a run folder: best.pt, else last.pt, else a clear CheckpointError
        return resolve_checkpoint(path)[0]
    return path


def _windowed(path, forced: bool) -> bool:
    from pixelwise.inference.raster import WINDOWED_ABOVE_PIXELS, is_tiff, raster_pixels

    return is_tiff(path) and (forced or (raster_pixels(path) or 0) > WINDOWED_ABOVE_PIXELS)


def _predict_rasters(predictor, rasters, args: argparse.Namespace, report) -> None:
    """Large TIFFs, window by window; their rows join the same class_shares.csv."""
    import csv

    from pixelwise.errors import DataError
    from pixelwise.inference.outputs import output_names
    from pixelwise.inference.raster import predict_raster

    if not rasters:
        return
    new_csv = not report.csv_path.exists()
    with open(report.csv_path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new_csv:
            writer.writerow(["image", "width", "height", *predictor.class_names])
        for path, name in zip(rasters, output_names(rasters)):
            try:
                result = predict_raster(predictor, path, args.out, name=name, alpha=args.alpha,
                                        overview_size=0 if args.no_overlay else 2048,
                                        progress=not args.no_progress)
            except DataError as exc:
                report.failed.append((path, exc.problem))
                print(f"skipped {path}: {exc.problem}", file=sys.stderr)
                continue
            writer.writerow([path.as_posix(), result.width, result.height, *(f"{s:.6f}" for s in result.shares)])
            report.written.append(path)


def run(args: argparse.Namespace) -> int:
    from pixelwise.errors import CheckpointError, ConfigError
    from pixelwise.inference.outputs import predict_to_folder
    from pixelwise.inference.predictor import DEFAULT_MAX_PIXELS, Predictor, iter_images

    if args.tile < 16 or not 0 <= args.overlap < args.tile:
        raise ConfigError(f"need --tile >= 16 and 0 <= --overlap < --tile (got {args.tile}, {args.overlap})")
    if args.batch_size < 1 or (args.tile_batch_size is not None and args.tile_batch_size < 1):
        raise ConfigError("--batch-size and --tile-batch-size must be at least 1")
    model_path = _resolve_model_path(args.model)
    if not model_path.exists():
        raise CheckpointError(f"{model_path}: no such checkpoint or ONNX file")
    paths = iter_images(args.inputs)
    if not paths:
        raise ConfigError("no image files found in the inputs")
    predictor = Predictor.load(
        model_path, device=args.device, precision=args.precision, tta=args.tta,
        tile=args.tile, overlap=args.overlap, blend=args.blend, batch_size=args.batch_size,
        tile_batch_size=args.tile_batch_size,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
    )
    rasters = [path for path in paths if _windowed(path, args.windowed)]
    if rasters and args.probs:
        raise ConfigError(f"{rasters[0]}: --probs is not available for windowed (large TIFF) prediction; "
                          "only the label map and an overview are written")
    in_memory = [path for path in paths if path not in rasters]
    report = predict_to_folder(predictor, in_memory, args.out, probs=args.probs, overlays=not args.no_overlay,
                               alpha=args.alpha, progress=not args.no_progress)
    _predict_rasters(predictor, rasters, args, report)
    print(f"predicted {len(report.written)} image(s) into {args.out} (class shares: {report.csv_path})")
    if report.failed:
        print(f"{len(report.failed)} input(s) failed:", file=sys.stderr)
        for path, problem in report.failed:
            print(f"  {path}: {problem}", file=sys.stderr)
        return 1
    return 0
