"""ONNX Runtime against PyTorch eager fp32 and the default fast mode (bf16 + channels_last).

The model is exported with pixelwise.export.export_onnx (which checks parity itself) and run
through pixelwise's onnxruntime backend, the same code `Predictor.from_onnx` uses. The three
variants are timed interleaved on the same normalised input.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from pixelwise.bench.harness import Context, area_result, interleave_within, paired_ratio, rate, summarize
from pixelwise.bench.model_steps import fast_mode_source, infer_step, prepare

AREA = "onnx"
NUM_CLASSES = 11
VARIANTS = ("onnxruntime fp32", "torch eager fp32", "torch eager fast (bf16 + channels_last)")


def make_checkpoint(name: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], torch.nn.Module]:
    """An in-memory pixelwise checkpoint of a freshly initialised model (and the model)."""
    from pixelwise.models import create_model
    from pixelwise.tasks import Task
    from pixelwise.checkpoint import FORMAT

    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, **kwargs).eval()
    task = Task("multiclass", num_classes=NUM_CLASSES)
    ckpt = {
        "format": FORMAT,
        "model": {"name": name, "kwargs": {"num_classes": NUM_CLASSES, **kwargs}},
        "task": task.to_dict(),
        "classes": {"names": [f"class{i}" for i in range(NUM_CLASSES)],
                    "colors": [[20 * i, 10 * i, 255 - 20 * i] for i in range(NUM_CLASSES)], "ignore_index": 255},
        "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3, "in_channels": 3, "crop_size": None},
        "state_dict": model.state_dict(),
    }
    return ckpt, model


def bench_one(name: str, kwargs: dict[str, Any], size: int, ctx: Context, workdir: Path) -> dict[str, Any]:
    from pixelwise.export import export_onnx
    from pixelwise.inference.onnx_backend import OnnxModel

    ckpt, model = make_checkpoint(name, kwargs)
    ctx.log(f"  exporting {name} to ONNX")
    # Parity is checked at the benchmarked size: that is the graph the figures describe.
    exported = export_onnx(ckpt, workdir / f"{name}.onnx", parity_sizes=[(size, size)])
    ort_model = OnnxModel(exported.path)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    fast_model = prepare(make_checkpoint(name, kwargs)[1], fast=True)
    ctx.log(f"  timing {name} at {size}x{size}")
    times = interleave_within(
        {VARIANTS[0]: lambda: ort_model(x), VARIANTS[1]: infer_step(model, x, fast=False),
         VARIANTS[2]: infer_step(fast_model, x, fast=True)},
        warmup=1, repeats=ctx.repeats, budget_s=10 if ctx.quick else 30,
    )
    ort_times = times[VARIANTS[0]]
    rows = []
    for variant, t in times.items():
        ips = rate(summarize(t), 1)
        speed = paired_ratio(t, ort_times)  # > 1: onnxruntime is faster than this variant
        rows.append({"model": f"{name} {kwargs or ''}".strip(), "variant": variant, "ips": ips.median,
                     "min": ips.min, "max": ips.max, "ort_speedup": speed.median,
                     "exporter": exported.exporter, "parity": exported.max_abs_diff,
                     "input": f"1x3x{size}x{size}", "runs": len(t), "threads": torch.get_num_threads()})
    return {"rows": rows}


def run(ctx: Context) -> dict[str, Any]:
    import onnxruntime

    import pixelwise.export  # noqa: F401  (missing -> "not available")

    plan = [("unet", {"base_channels": 16}, 256)] if ctx.quick else \
        [("unet", {}, 512), ("lraspp_mobilenetv3", {}, 512)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pixelwise-bench-onnx-") as tmp:
        for name, kwargs, size in plan:
            rows += bench_one(name, kwargs, size, ctx, Path(tmp))["rows"]
    return area_result(
        command=ctx.command(AREA),
        columns=[("model", "model"), ("variant", "variant"), ("ips", "images/s (median)"), ("min", "min"),
                 ("max", "max"), ("ort_speedup", "onnxruntime speed-up over this"), ("exporter", "exporter"),
                 ("parity", "export max abs diff"), ("input", "input"), ("runs", "runs"),
                 ("threads", "torch threads")],
        rows=rows,
        notes=[f"onnxruntime {onnxruntime.__version__}, default session options and providers "
               f"({', '.join(onnxruntime.get_available_providers())}). Fast mode via {fast_mode_source()}. "
               "Speed-up = median over interleaved rounds of (this variant's time / onnxruntime's time)."],
    )
