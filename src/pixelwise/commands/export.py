"""`pixelwise export CHECKPOINT --format onnx|torchscript --out FILE`: a deployable model file."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript (with a parity check)",
        description="Export a checkpoint. ONNX has dynamic batch, height and width and carries the task, "
                    "classes, colours and mean/std as metadata; the exported file is run against PyTorch "
                    "and the max difference is printed.",
    )
    p.add_argument("checkpoint", help="checkpoint .pt (or a run folder)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", required=True, help="output file (.onnx or .pt)")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="graph input is a uint8 NHWC image; scaling and mean/std happen inside")
    p.add_argument("--with-decoding", action="store_true",
                   help="graph output is a uint8 label map (argmax / threshold) instead of logits")
    p.add_argument("--exporter", choices=["auto", "torchscript", "dynamo"], default="auto",
                   help="ONNX exporter: auto tries the TorchScript-based one, then dynamo")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.commands.predict import _resolve_model_path

    checkpoint = _resolve_model_path(args.checkpoint)
    if args.format == "onnx":
        from pixelwise.export.onnx import export_onnx

        result = export_onnx(checkpoint, args.out, with_preprocessing=args.with_preprocessing,
                             with_decoding=args.with_decoding, check=not args.no_check, exporter=args.exporter)
    else:
        from pixelwise.export.torchscript import export_torchscript

        result = export_torchscript(checkpoint, args.out, with_preprocessing=args.with_preprocessing,
                                    with_decoding=args.with_decoding)
    unit = "fraction of differing labels" if args.with_decoding else "max |logit difference|"
    if result.checked_sizes:
        sizes = ", ".join(f"{h}x{w}" for h, w in result.checked_sizes)
        print(f"parity vs PyTorch at {sizes}: {unit} = {result.max_abs_diff:.3g}")
    print(f"wrote {result.path} ({result.exporter})")
    return 0
