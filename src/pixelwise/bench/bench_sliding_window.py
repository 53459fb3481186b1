"""The cost of segmenting by classifying a window around every pixel, against FCN-8s.

Both label one 256x256 RGB image (11 classes) in fp32 eager mode, timed interleaved. The
sliding-window model really classifies a patch per pixel (65,536 crops); FCN-8s shares the
computation between overlapping windows, which is what fully convolutional networks fixed.
"""

from __future__ import annotations

from typing import Any

import torch

from pixelwise.bench.harness import Context, area_result, interleave_within, paired_ratio, rate, summarize
from pixelwise.bench.model_steps import count_gflops, infer_step

AREA = "sliding_window"
NUM_CLASSES = 11
SIZE = 256  # the full run's image side; --quick uses QUICK_SIZE
QUICK_SIZE = 96
MODELS = ("sliding_window", "fcn8s")


def run(ctx: Context) -> dict[str, Any]:
    from pixelwise.models import create_model, list_models

    missing = [m for m in MODELS if m not in list_models()]
    if missing:
        raise ImportError(f"model(s) not registered: {', '.join(missing)}")
    size = QUICK_SIZE if ctx.quick else SIZE
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    models = {name: create_model(name, num_classes=NUM_CLASSES).eval() for name in MODELS}
    gflops = {}
    for name, model in models.items():
        with torch.no_grad():
            gflops[name] = count_gflops(lambda: model(x))
    ctx.log(f"  {' vs '.join(MODELS)} on one {size}x{size} image")
    times = interleave_within({name: infer_step(model, x, fast=False) for name, model in models.items()},
                              warmup=1, repeats=ctx.repeats, budget_s=10 if ctx.quick else 40,
                              min_repeats=2 if ctx.quick else 3)
    base = times["fcn8s"]
    rows = []
    for name in MODELS:
        seconds = summarize(times[name])
        ratio = paired_ratio(times[name], base)
        rows.append({
            "model": name, "params_m": sum(p.numel() for p in models[name].parameters()) / 1e6,
            "gflops": gflops[name], "seconds": seconds.median, "min": seconds.min, "max": seconds.max,
            "time_ratio": ratio.median, "ratio_range": f"{ratio.min:.3g}–{ratio.max:.3g}",
            "flop_ratio": gflops[name] / gflops["fcn8s"], "mpix_s": rate(seconds, size * size / 1e6).median,
            "runs": seconds.n, "threads": torch.get_num_threads(),
        })
    sw = models["sliding_window"]
    patch = getattr(getattr(sw, "cfg", None), "patch_size", "?")
    return area_result(
        command=ctx.command(AREA),
        columns=[("model", "model"), ("params_m", "params (M)"), ("gflops", "GFLOPs / image"),
                 ("seconds", "seconds / image (median)"), ("min", "min"), ("max", "max"),
                 ("time_ratio", "time vs FCN-8s"), ("ratio_range", "ratio min–max"),
                 ("flop_ratio", "FLOPs vs FCN-8s"), ("mpix_s", "Mpixel/s"), ("runs", "runs"),
                 ("threads", "threads")],
        rows=rows,
        notes=[f"One 1x3x{size}x{size} image, {NUM_CLASSES} classes, fp32 eager, no grad, default widths "
               f"(sliding-window patch {patch}x{patch}: one crop classified per pixel, {size * size:,} crops). "
               "GFLOPs counted by FlopCounterMode. Time ratio = median over interleaved rounds."],
    )
