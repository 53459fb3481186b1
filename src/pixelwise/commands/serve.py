"""`pixelwise serve CHECKPOINT_OR_ONNX`: an HTTP service with a drop-an-image page."""

from __future__ import annotations

import argparse

from pixelwise.commands.runtime_args import add_backend_argument, add_runtime_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (POST /predict, a page at /, OpenAPI docs at /docs)",
        description="Serve a checkpoint (.pt) or an exported ONNX file over HTTP with FastAPI + uvicorn. "
        "Binds to 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument("model", metavar="CHECKPOINT_OR_ONNX", help="a .pt checkpoint or an .onnx file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_runtime_arguments(parser, note="checkpoints only; an ONNX file runs in onnxruntime")
    add_backend_argument(parser)
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MiB (default 20)")
    parser.add_argument("--max-pixels", type=int, default=50_000_000, help="largest image, width*height (default 50M)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request before 504 (default 60)")
    parser.add_argument("--max-queue", type=int, default=32, help="waiting requests before 503 (default 32)")
    parser.add_argument("--max-batch", type=int, default=8, help="images per micro-batch (default 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pixelwise.errors import ConfigError

    try:
        import uvicorn

        from pixelwise.serve import ServeSettings, create_app
    except ModuleNotFoundError as exc:
        raise ConfigError(f"serving needs the optional web packages ({exc.name} is missing): "
                          "pip install 'pixelwise[serve]'") from None
    from pixelwise.inference.predictor import Predictor

    for flag, value in (("--max-upload-mb", args.max_upload_mb), ("--max-pixels", args.max_pixels),
                        ("--timeout", args.timeout), ("--max-queue", args.max_queue), ("--max-batch", args.max_batch)):
        if value <= 0:
            raise ConfigError(f"{flag} must be positive, got {value}")
    path = Path(args.model)
    predictor = Predictor.load(path, backend=args.backend, device=args.device, precision=args.precision,
                               channels_last=args.channels_last)
    settings = ServeSettings(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
        request_timeout_s=args.timeout, max_queue=args.max_queue, max_batch=args.max_batch,
    )
    app = create_app(predictor, settings, name=path.stem, input_size=_crop_size(path))
    # limit_concurrency makes uvicorn itself answer 503 beyond the queue plus a margin for
    # /health and the page, so open connections cannot grow without bound.
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=settings.max_queue + 32,
                timeout_keep_alive=5, log_level="info")
    return 0


def _crop_size(path) -> int | None:
    """The training crop recorded in a checkpoint (informational only; ONNX: None)."""
    if path.suffix.lower() == ".onnx":
        return None
    from pixelwise.checkpoint import read_meta

    return read_meta(path).crop_size
