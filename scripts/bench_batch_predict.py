"""Throughput of batch prediction: 1 process, 2 torchrun processes, Ray Data with 2 workers.

    python scripts/bench_batch_predict.py --out /tmp/batch_bench [--images 200] [--size 256]

The same images (RGB PNGs) and the same checkpoint (a randomly initialised U-Net, base 16)
for every engine, one thread per process, the real `pixelwise predict` command. "Overhead
per image" is the engine's wall time per image beyond an in-process loop doing the same work
(read, predict, write) split over the same number of processes. Prints JSON lines naming the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_raster import cpu_description  # noqa: E402  (a sibling script, not the package)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    import torch

    from pixelwise.inference import Predictor
    from pixelwise.inference.outputs import predict_to_folder
    from pixelwise.models import create_model
    from pixelwise.checkpoint import save_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    images = args.out / "images"
    if not images.is_dir():
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(images / f"{i:05d}.png")
    torch.manual_seed(0)
    kwargs = {"num_classes": 4, "in_channels": 3, "base_channels": 16, "depth": 4}
    checkpoint = args.out / "unet.pt"
    save_checkpoint(checkpoint, {
        "model": {"name": "unet", "kwargs": kwargs}, "task": {"kind": "multiclass", "num_classes": 4},
        "classes": {"names": ["a", "b", "c", "d"], "colors": [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
                    "ignore_index": 255},
        "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3, "in_channels": 3, "crop_size": None},
        "state_dict": create_model("unet", **kwargs).state_dict(),
    })
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    common = ["--device", "cpu", "--precision", "fp32", "--batch-size", "1", "--no-progress"]

    torch.set_num_threads(1)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", precision="fp32", batch_size=1)
    paths = sorted(images.glob("*.png"))
    start = time.perf_counter()
    predict_to_folder(predictor, paths, args.out / "inproc", progress=False)
    in_process = time.perf_counter() - start

    engines = {
        "1 process": [sys.executable, "-m", "pixelwise", "predict", str(checkpoint), str(images)],
        "torchrun, 2 processes": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                  "--master-addr", "127.0.0.1", "--master-port", "0", "-m", "pixelwise", "predict",
                                  str(checkpoint), str(images)],
        "Ray Data, 2 workers": [sys.executable, "-m", "pixelwise", "predict", str(checkpoint), str(images),
                                "--engine", "ray", "--ray-workers", "2"],
    }
    parallel = {"1 process": 1, "torchrun, 2 processes": 2, "Ray Data, 2 workers": 2}
    for label, command in engines.items():
        target = args.out / label.split(",")[0].split()[0].lower()
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        proc = subprocess.run([*command, "--out", str(target), *common], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        overhead = (wall - in_process / parallel[label]) / len(paths)
        print(json.dumps({"benchmark": "batch predict", "engine": label, "images": len(paths),
                          "size": args.size, "wall_s": round(wall, 1), "images_per_s": round(len(paths) / wall, 2),
                          "overhead_ms_per_image": round(1000 * overhead, 1),
                          "in_process_s": round(in_process, 1), **cpu_description()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
