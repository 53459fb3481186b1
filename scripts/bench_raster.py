"""Benchmark windowed raster prediction: peak RSS, wall time and Mpixel/s of `pixelwise predict`.

    python scripts/bench_raster.py --size 32768 --out /tmp/raster_bench [--height H] [--classes 6]

Writes a synthetic tiled, deflate-compressed RGB BigTIFF (streamed tile by tile, never held in
memory), a randomly initialised checkpoint of the model, then runs the real command as a
child process and reads its peak RSS from the kernel's accounting of the child. Prints one
JSON line with the CPU model and flags, so figures say which machine they came from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch


def cpu_description() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    # The load average says whether other work shared the cores while this ran.
    return {"cpu": model, "flags": [f for f in wanted if f in flags], "cores": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 1)}


def write_scene(path: Path, height: int, width: int, tile: int = 512) -> None:
    """Smooth fields plus noise, generated per tile, so the file compresses like imagery does."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 24, (tile, tile, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:tile, 0:tile]

    def tiles():
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                field = 120 + 60 * np.sin((yy + top) / 97.0) * np.cos((xx + left) / 131.0)
                yield (field[..., None] + noise).astype(np.uint8)

    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        writer.write(tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile),
                     compression="zlib", photometric="rgb")


def write_checkpoint(path: Path, model_name: str, classes: int) -> None:
    from pixelwise.models import create_model
    from pixelwise.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"num_classes": classes, "in_channels": 3}
    model = create_model(model_name, **kwargs).eval()
    names = [f"class{i}" for i in range(classes)]
    save_checkpoint(path, {
        "model": {"name": model_name, "kwargs": kwargs}, "task": {"kind": "multiclass", "num_classes": classes},
        "classes": {"names": names, "colors": [[(50 * i) % 256, (90 * i) % 256, (170 * i) % 256]
                                               for i in range(classes)], "ignore_index": 255},
        "preprocess": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "in_channels": 3,
                       "crop_size": None},
        "state_dict": model.state_dict(),
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32768, help="width (and height unless --height)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--model", default="lraspp_mobilenetv3")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    height, width = args.height or args.size, args.size
    args.out.mkdir(parents=True, exist_ok=True)
    scene, checkpoint = args.out / f"scene_{width}x{height}.tif", args.out / f"{args.model}.pt"
    if not scene.exists():
        write_scene(scene, height, width)
    write_checkpoint(checkpoint, args.model, args.classes)

    command = [sys.executable, "-m", "pixelwise", "predict", str(checkpoint), str(scene), "--out",
               str(args.out / "pred"), "--windowed", "--tile", str(args.tile), "--device", "cpu", "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    row = {"benchmark": "windowed raster predict", "model": args.model, "classes": args.classes,
           "width": width, "height": height, "tile": args.tile, "wall_s": round(wall, 1),
           "mpixel_per_s": round(width * height / wall / 1e6, 2), "peak_rss_mib": round(peak_kib / 1024),
           "scene_file_mib": round(scene.stat().st_size / 2**20), **cpu_description()}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
