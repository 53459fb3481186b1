"""Tiled inference on a large RGB image (8192x8192, 11 classes, U-Net): wall time and peak RSS.

The measurement runs in a fresh subprocess (`python -m pixelwise.bench.bench_tiling --child SIZE`), so
the peak resident set size it reports belongs to that prediction alone, not to whatever the
parent process allocated before (other areas' models, torchmetrics batches...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from pixelwise.bench.harness import Context, area_result, goal, package_env, peak_rss_bytes

AREA = "tiling"
NUM_CLASSES = 11
RSS_GOAL_BYTES = 2 * 1024**3


BASE_CHANNELS = 32


def child(size: int, tile: int, model_name: str) -> dict[str, Any]:
    """Predict labels for a random size x size RGB image through Predictor; report time and RSS."""
    import numpy as np
    import torch

    from pixelwise.inference import Predictor
    from pixelwise.models import create_model
    from pixelwise.tasks import Task

    torch.manual_seed(0)
    # Base width 32 (7.8M parameters, ~96 GFLOPs per 512x512 tile): the original 64-wide U-Net
    # would need ~170 TFLOPs for the ~440 tiles of 8192x8192, over 20 minutes on 2 cores.
    model = create_model(model_name, num_classes=NUM_CLASSES, base_channels=BASE_CHANNELS)
    predictor = Predictor.from_model(model, Task("multiclass", num_classes=NUM_CLASSES),
                                     mean=[0.5] * 3, std=[0.25] * 3, device="cpu", precision="auto",
                                     tile=tile, overlap=tile // 4)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)  # 3 bytes/pixel
    rss_before = peak_rss_bytes()
    start = time.perf_counter()
    labels = predictor.predict(image).labels
    seconds = time.perf_counter() - start
    if labels.shape != (size, size):
        raise RuntimeError(f"predict returned labels of shape {labels.shape}, expected {(size, size)}")
    return {
        "seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_before_predict_bytes": rss_before,
        "image_bytes": int(image.nbytes),
        "labels_dtype": str(labels.dtype),
        "threads": torch.get_num_threads(),
        "tile": tile,
        "overlap": predictor.overlap,
        "batch_size": predictor.tile_batch_size,
        "precision": _precision_name(),
    }


def _precision_name() -> str:
    """What precision='auto' picks on this CPU (the Predictor's default), from the one resolver."""
    from pixelwise.runtime import resolve_runtime

    runtime = resolve_runtime("cpu", "auto")
    return ("fp32" if runtime.dtype is None else f"{runtime.precision} autocast") + \
        (" + channels_last" if runtime.channels_last else "")


def run_child(size: int, tile: int, model_name: str, timeout_s: float) -> dict[str, Any]:
    """Run `child` in a fresh interpreter and parse its one-line JSON answer."""
    proc = subprocess.run(
        [sys.executable, "-m", "pixelwise.bench.bench_tiling", "--child", str(size), "--tile", str(tile),
         "--model", model_name],
        env=package_env(), capture_output=True, text=True, timeout=timeout_s,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"tiling subprocess failed (exit {proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ctx: Context) -> dict[str, Any]:
    import pixelwise.inference  # noqa: F401  (fail early as "not available" when it is missing)
    import pixelwise.models  # noqa: F401

    size = 1024 if ctx.quick else 8192
    tile = 512
    # One full-size run: ~440 tiles of a ~390 GFLOP/tile U-Net take several minutes on 2 cores.
    repeats = 1
    ctx.log(f"  {size}x{size} in a subprocess, {repeats} run(s)")
    runs = [run_child(size, tile, "unet", timeout_s=1800) for _ in range(repeats)]
    seconds = sorted(r["seconds"] for r in runs)
    peak = max(r["peak_rss_bytes"] for r in runs)
    first = runs[0]
    row = {
        "image": f"{size}x{size}x3 uint8", "model": f"unet (base_channels={BASE_CHANNELS}, depth 4)", "classes": NUM_CLASSES,
        "seconds": seconds[len(seconds) // 2], "range": f"{seconds[0]:.3g}–{seconds[-1]:.3g}",
        "mpix_s": size * size / 1e6 / seconds[len(seconds) // 2],
        "peak_rss_gib": peak / 1024**3, "rss_before_gib": first["peak_rss_before_predict_bytes"] / 1024**3,
        "tile": f"{tile} (overlap {first['overlap']}, batch {first['batch_size']})",
        "precision": first["precision"],
        "runs": len(runs), "threads": first["threads"],
    }
    passed = peak < RSS_GOAL_BYTES if size == 8192 else None
    return area_result(
        command=ctx.command(AREA),
        columns=[("image", "image"), ("model", "model"), ("classes", "classes"), ("seconds", "seconds"),
                 ("range", "min–max"), ("mpix_s", "Mpixel/s"), ("peak_rss_gib", "peak RSS (GiB)"),
                 ("rss_before_gib", "RSS before predict (GiB)"), ("tile", "tile"), ("precision", "precision"),
                 ("runs", "runs"),
                 ("threads", "threads")],
        rows=[row],
        goals=[goal("Tiled 8192x8192 inference peak RSS", "< 2 GiB", row["peak_rss_gib"] if size == 8192 else None,
                    passed, " GiB")],
        notes=["Predictor.from_model(...).predict(image) on a random RGB image (tiles automatically above its "
               "pixel budget), default precision (the fast path where supported). Each run is a fresh "
               "subprocess; peak RSS is its VmHWM (/proc/self/status: its own peak, not inherited from the parent as ru_maxrss is), which includes the interpreter, torch, the model and "
               "the 3-byte/pixel input image." + (" Quick run: 1024x1024, the goal is judged only at 8192." if
                                                   ctx.quick else "")],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=int, required=True, metavar="SIZE")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--model", default="unet")
    args = parser.parse_args()
    print(json.dumps(child(args.child, args.tile, args.model)))


if __name__ == "__main__":
    main()
