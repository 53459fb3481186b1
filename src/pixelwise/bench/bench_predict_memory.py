"""Peak RSS of the real `pixelwise predict` command on one 8192x8192 RGB PNG, default flags.

The command runs in a subprocess started by a small launcher, and the launcher reads
getrusage(RUSAGE_CHILDREN).ru_maxrss: the whole command's peak (decoding, tiled prediction,
label PNG, overlay, CSV), not the Predictor's alone. The model is a small U-Net (base 8,
depth 3), so the figure is dominated by what the command holds per image; a full-width
U-Net tile adds its activations (see docs/inference.md).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pixelwise.bench.harness import Context, area_result, goal, package_env

LIMIT_GIB = 1.5
_LAUNCHER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "rc = subprocess.run(sys.argv[1:]).returncode; "
             "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, time.perf_counter() - t)")


def make_inputs(folder: Path, size: int) -> tuple[Path, Path]:
    """A small U-Net checkpoint (4 classes) and a size x size RGB PNG (gradients + sparse noise)."""
    import numpy as np
    import torch
    from PIL import Image

    from pixelwise import atomic
    from pixelwise.bench.bench_onnx import make_checkpoint

    torch.manual_seed(0)
    ckpt = folder / "unet_small.pt"
    atomic.torch_save(ckpt, make_checkpoint("unet", {"base_channels": 8, "depth": 3})[0])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.stack([y * 255, x * 255, (x + y) * 127], -1).astype(np.uint8)
    rng = np.random.default_rng(0)
    image[::7, ::5] = rng.integers(0, 256, image[::7, ::5].shape, dtype=np.uint8)
    path = folder / "big.png"
    Image.fromarray(image).save(path, compress_level=1)
    return ckpt, path


def run(ctx: Context) -> dict[str, Any]:
    size = 2048 if ctx.quick else 8192
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt, image = make_inputs(folder, size)
        command = [sys.executable, "-m", "pixelwise", "predict", str(ckpt), str(image), "--out", str(folder / "out"),
                   "--no-progress", "--backend", "torch"]
        ctx.log(f"  pixelwise predict on a {size}x{size} PNG")
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True,
                              env=package_env(), timeout=3600)
        rc, peak, seconds = proc.stdout.split()[-3:]
        if int(rc) != 0:
            raise RuntimeError(f"pixelwise predict failed: {proc.stderr.strip()[-500:]}")
    gib = int(peak) / 1024**3
    rows = [{"input": f"{size}x{size} RGB PNG", "flags": "defaults (labels + overlay), --backend torch",
             "peak_gib": gib, "seconds": float(seconds)}]
    passed = None if ctx.quick else gib < LIMIT_GIB
    return area_result(
        command=ctx.command("predict_memory"),
        columns=[("input", "input"), ("flags", "flags"), ("peak_gib", "peak RSS GiB"), ("seconds", "wall s")],
        rows=rows,
        goals=[goal(f"`pixelwise predict` {size}x{size} peak RSS", f"< {LIMIT_GIB} GiB", gib, passed, " GiB")],
        notes=["Model: U-Net base 8, depth 3 (4 classes); tiles of 512 with overlap 128, one tile per pass. "
               "A full-width U-Net (base 64) adds its tile activations, ~0.3 GB in bf16, ~0.6 GB in fp32.",
               "Wall time varies with the machine's load; peak RSS does not.",
               "Before the overlay was blended and encoded in strips (commit e94569c) the same command peaked "
               "at 3118 MiB on this machine type."],
    )
