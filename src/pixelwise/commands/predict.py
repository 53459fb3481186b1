"""`pixelwise predict MODEL INPUTS... --out DIR`: label maps, overlays, probabilities, a CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pixelwise.commands.runtime_args import add_backend_argument, add_runtime_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict label maps for image files, folders or globs",
        description="Run a checkpoint (.pt) or an exported .onnx model over images. Writes OUT/labels/*.png "
                    "(palette PNGs, pixel = class id), OUT/overlays/*.png, optional OUT/probs/, and "
                    "OUT/class_shares.csv. Unreadable files are skipped and listed; the exit status is 1 "
                    "if any failed.",
    )
    p.add_argument("model", nargs="?", help="checkpoint .pt (e.g. RUN_DIR/checkpoints/best.pt), a run folder, "
                                           "or an .onnx file")
    p.add_argument("inputs", nargs="*", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", help="output folder")
    p.add_argument("--manifest", default=None,
                   help="a file listing the inputs: one path per line, or a CSV with a `path` column")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="predict only shard I of N (I from 0) of the sorted inputs; under torchrun the "
                        "default is RANK/WORLD_SIZE")
    p.add_argument("--resume", action="store_true", help="skip inputs whose outputs are already done")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (this process; torchrun for several) or ray (Ray Data, on the cluster "
                        "ray.init() finds; pip install pixelwise[ray])")
    p.add_argument("--ray-workers", type=int, default=2, help="model replicas (actors) for --engine ray")
    p.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                   help="join the class-share CSVs of sharded runs in DIR... into DIR/class_shares.csv "
                        "(or --out) and list failures; no prediction")
    p.add_argument("--probs", choices=["npy", "png8", "png16"], default=None,
                   help="also write probabilities: .npy float16 (K,H,W), or one 8/16-bit PNG per class")
    p.add_argument("--uncertainty", choices=["entropy", "margin", "tta-variance"], default=None,
                   help="also write a per-pixel uncertainty map (OUT/uncertainty/), a heat overlay and a per-image "
                        "score column in the CSV; tta-variance needs --tta with two or more views")
    p.add_argument("--uncertainty-format", choices=["png16", "npy"], default="png16",
                   help="uncertainty maps as 16-bit PNG (0..65535 = 0..1, default) or float32 .npy")
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
    add_runtime_arguments(p, note="checkpoints only; an ONNX file runs in onnxruntime")
    add_backend_argument(p)
    p.add_argument("--windowed", action="store_true",
                   help="read every TIFF input window by window and write a tiled GeoTIFF label map "
                        "(automatic for TIFFs over 8192x8192 pixels); resumes after a kill")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=["png", "labelme", "coco", "cvat", "labelstudio"], default="png",
                   help="png: label maps (default); or pre-labels to correct in a labelling tool (docs/labelling.md)")
    p.add_argument("--image-url", default=None,
                   help="labelstudio: URL prefix of the images in tasks.json (default /data/local-files/?d=images/)")
    p.set_defaults(func=run)


def _resolve_model_path(text: str):
    from pixelwise.checkpoint import resolve_checkpoint

    path = Path(text)
    if path.is_dir():  # a run folder: best.pt, else last.pt, else a clear CheckpointError
        return resolve_checkpoint(path)[0]
    return path


def _windowed(path, forced: bool) -> bool:
    from pixelwise.inference.raster import WINDOWED_ABOVE_PIXELS, is_tiff, raster_pixels

    return is_tiff(path) and (forced or (raster_pixels(path) or 0) > WINDOWED_ABOVE_PIXELS)


def _predict_rasters(predictor, rasters, names, args: argparse.Namespace, report) -> None:
    """Large TIFFs, window by window; each gets a done marker like the other inputs."""
    from pixelwise.errors import DataError
    from pixelwise.inference.raster import predict_raster
    from pixelwise.inference.sharding import is_done, mark_done

    for path, name in zip(rasters, names):
        if args.resume and is_done(args.out, name):
            report.skipped += 1
            continue
        try:
            result = predict_raster(predictor, path, args.out, name=name, alpha=args.alpha,
                                    overview_size=0 if args.no_overlay else 2048,
                                    progress=not args.no_progress)
        except DataError as exc:
            report.failed.append((path, exc.problem))
            print(f"skipped {path}: {exc.problem}", file=sys.stderr)
            continue
        mark_done(args.out, name, {"image": path.as_posix(), "width": result.width, "height": result.height,
                                   "shares": [float(v) for v in result.shares]})
        report.written.append(path)


def _exit_status(failures) -> int:
    """0 when every input succeeded; 1, with the list on stderr, when some failed."""
    if not failures:
        return 0
    print(f"{len(failures)} input(s) failed:", file=sys.stderr)
    for path, problem in failures:
        print(f"  {path}: {problem}", file=sys.stderr)
    return 1


def _merge(args: argparse.Namespace) -> int:
    from pixelwise.inference.sharding import merge_shards

    result = merge_shards(args.merge, None if args.out is None else Path(args.out) / "class_shares.csv")
    print(f"merged {result.rows} image(s) into {result.csv_path}")
    for name in result.duplicates:
        print(f"warning: {name} appears in more than one shard (kept the last)", file=sys.stderr)
    return _exit_status(result.failures)


def _prelabels(args: argparse.Namespace, model_path: Path) -> int:
    """--format labelme|coco|cvat|labelstudio: one set of annotation files for a labelling tool."""
    from pixelwise.errors import ConfigError
    from pixelwise.inference.predictor import DEFAULT_MAX_PIXELS, Predictor
    from pixelwise.inference.prelabels import write_prelabels

    if args.shard or args.engine != "local" or args.resume or args.windowed or args.probs:
        raise ConfigError(f"--format {args.format} writes one set of annotation files: --shard, --engine ray, "
                          "--resume, --windowed and --probs belong to --format png")
    predictor = Predictor.load(model_path, backend=args.backend, device=args.device, precision=args.precision,
                               channels_last=args.channels_last, tta=args.tta, tile=args.tile, overlap=args.overlap,
                               blend=args.blend, batch_size=args.batch_size, tile_batch_size=args.tile_batch_size,
                               max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    report = write_prelabels(predictor, _inputs(args), Path(args.out), args.format, image_url=args.image_url,
                             progress=not args.no_progress)
    print(f"pre-labelled {len(report.written)} image(s) as {args.format}: {report.csv_path}")
    for path, problem in report.failed:
        print(f"  failed: {path}: {problem}", file=sys.stderr)
    return 1 if report.failed else 0


def _inputs(args: argparse.Namespace) -> list[Path]:
    from pixelwise.errors import ConfigError
    from pixelwise.inference.predictor import iter_images
    from pixelwise.inference.sharding import read_manifest

    paths = (read_manifest(args.manifest) if args.manifest else []) + (iter_images(args.inputs) if args.inputs else [])
    if not paths:
        raise ConfigError("no image files found in the inputs")
    # Sorted and unique: every process of a sharded run sees the same list in the same order.
    return sorted(dict.fromkeys(paths), key=lambda p: p.as_posix())


def run(args: argparse.Namespace) -> int:
    from pixelwise.errors import CheckpointError, ConfigError
    from pixelwise.inference.outputs import output_names, predict_to_folder
    from pixelwise.inference.predictor import DEFAULT_MAX_PIXELS, Predictor
    from pixelwise.inference.sharding import parse_shard, read_done, write_failures_csv, write_rows_csv

    if args.merge:
        return _merge(args)
    if not args.model or not args.out or not (args.inputs or args.manifest):
        raise ConfigError("predict needs MODEL, inputs (or --manifest) and --out; or --merge DIR...")
    if args.tile < 16 or not 0 <= args.overlap < args.tile:
        raise ConfigError(f"need --tile >= 16 and 0 <= --overlap < --tile (got {args.tile}, {args.overlap})")
    if args.batch_size < 1 or (args.tile_batch_size is not None and args.tile_batch_size < 1):
        raise ConfigError("--batch-size and --tile-batch-size must be at least 1")
    model_path = _resolve_model_path(args.model)
    if not model_path.exists():
        raise CheckpointError(f"{model_path}: no such checkpoint or ONNX file")
    if args.format != "png":
        return _prelabels(args, model_path)
    shard = parse_shard(args.shard)
    all_paths = _inputs(args)
    all_names = output_names(all_paths)  # decided on the whole list: independent of the sharding
    paths, names = shard.select(all_paths), shard.select(all_names)
    options = dict(tta=args.tta, tile=args.tile, overlap=args.overlap, blend=args.blend,
                   batch_size=args.batch_size, tile_batch_size=args.tile_batch_size,
                   max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    out = Path(args.out)
    csv_path = out / f"class_shares{shard.suffix}.csv"
    if args.engine == "ray":
        from pixelwise.integrations.ray import predict_with_ray

        if args.uncertainty:
            raise ConfigError("--uncertainty runs with the local engine only (not --engine ray)")
        report = predict_with_ray(model_path, paths, out, names=names, workers=args.ray_workers,
                                  resume=args.resume, probs=args.probs, overlays=not args.no_overlay,
                                  alpha=args.alpha, device=args.device, precision=args.precision,
                                  channels_last=args.channels_last, **options)
        class_names = Predictor.load(model_path, device="cpu").class_names  # the CSV header
    else:
        predictor = Predictor.load(model_path, backend=args.backend, device=args.device, precision=args.precision,
                                   channels_last=args.channels_last, **options)
        windowed = [_windowed(path, args.windowed) for path in paths]
        if any(windowed) and (args.probs or args.uncertainty):
            raise ConfigError(f"{paths[windowed.index(True)]}: --probs is not available for windowed (large TIFF) "
                              "prediction; only the label map and an overview are written (no --probs, "
                              "no --uncertainty)")
        report = predict_to_folder(predictor, [p for p, w in zip(paths, windowed) if not w], out,
                                   names=[n for n, w in zip(names, windowed) if not w], probs=args.probs,
                                   overlays=not args.no_overlay, alpha=args.alpha, progress=not args.no_progress,
                                   resume=args.resume, csv_name=csv_path.name, uncertainty=args.uncertainty,
                                   uncertainty_format=args.uncertainty_format)
        _predict_rasters(predictor, [p for p, w in zip(paths, windowed) if w],
                         [n for n, w in zip(names, windowed) if w], args, report)
        class_names = predictor.class_names
    write_rows_csv(csv_path, class_names, read_done(out, names))
    if not shard.is_whole or report.failed:
        write_failures_csv(out / f"failures{shard.suffix}.csv", report.failed)
    where = "" if shard.is_whole else f" (shard {shard.index}/{shard.count}: {len(paths)} of {len(all_paths)} inputs)"
    skipped = f", {report.skipped} already done" if report.skipped else ""
    print(f"predicted {len(report.written)} image(s) into {args.out}{where}{skipped} (class shares: {csv_path})")
    return _exit_status(report.failed)
