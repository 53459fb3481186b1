"""Bounded load test of `pixelwise serve` on loopback; prints one JSON line.

    python -m pixelwise.bench.bench_serve                          # tiny U-Net served in-process
    python -m pixelwise.bench.bench_serve --checkpoint runs/x/checkpoints/best.pt --requests 500 --concurrency 16
    python -m pixelwise.bench.bench_serve --url http://127.0.0.1:8000   # a server already running

Output: requests, concurrency, errors (non-200 or failed), status counts, wall seconds,
throughput (requests/s), and p50/p90/p99/max latency in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


async def _load(url: str, payload: bytes, requests: int, concurrency: int, fmt: str) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    failures: list[str] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            for _ in counter:  # shared iterator: exactly `requests` requests in total
                start = time.perf_counter()
                try:
                    response = await client.post("/predict", params={"format": fmt},
                                                 files={"file": ("bench.png", payload, "image/png")})
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - start)
                    else:
                        failures.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    statuses["exception"] += 1
                    failures.append(repr(exc))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "requests": requests, "concurrency": concurrency, "format": fmt,
        "errors": requests - len(latencies), "status": {str(k): v for k, v in statuses.items()},
        "wall_s": round(wall, 3), "throughput_rps": round(len(latencies) / wall, 2) if wall > 0 else None,
        "latency_ms": {name: round(percentile_ms(latencies, q), 2) for name, q in
                       (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "first_failures": failures[:3],
    }


def run_load(url: str, payload: bytes, requests: int = 500, concurrency: int = 16, fmt: str = "png") -> dict:
    """Send `requests` POST /predict with at most `concurrency` in flight; return the summary dict."""
    return asyncio.run(_load(url, payload, requests, concurrency, fmt))


def synthetic_png(size: int, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_checkpoint(folder: Path) -> Path:
    """A small untrained U-Net checkpoint: the service's overhead, not model quality, is measured."""
    from pixelwise.models import create_model
    from pixelwise.tasks import Task
    from pixelwise.checkpoint import save_checkpoint, unwrapped_state_dict

    kwargs = {"num_classes": 3, "base_channels": 8, "depth": 2}
    model = create_model("unet", **kwargs)
    return save_checkpoint(folder / "tiny.pt", {
        "model": {"name": "unet", "kwargs": kwargs},
        "task": Task(kind="multiclass", num_classes=3).to_dict(),
        "classes": {"names": ["a", "b", "c"], "colors": [[0, 0, 0], [255, 0, 0], [0, 0, 255]], "ignore_index": 255},
        "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3, "in_channels": 3, "crop_size": None},
        "state_dict": unwrapped_state_dict(model),
    })


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` under uvicorn in a background thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="benchmark a running server instead of starting one")
    parser.add_argument("--checkpoint", help="checkpoint or ONNX to serve in-process (default: a tiny U-Net)")
    parser.add_argument("--image", help="image file to upload (default: random RGB PNG of --size)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--format", default="png", choices=["png", "json", "overlay"])
    parser.add_argument("--max-queue", type=int, default=64)
    args = parser.parse_args(argv)
    payload = Path(args.image).read_bytes() if args.image else synthetic_png(args.size)
    if args.url:
        result = run_load(args.url, payload, args.requests, args.concurrency, args.format)
    else:
        from pixelwise.inference.predictor import Predictor
        from pixelwise.serve import ServeSettings, create_app

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(Path(tmp))
            app = create_app(Predictor.load(path), ServeSettings(max_queue=args.max_queue), name=path.stem)
            with serving(app) as url:
                result = run_load(url, payload, args.requests, args.concurrency, args.format)
                import httpx

                result["server"] = httpx.get(f"{url}/health").json()
    result["image_bytes"] = len(payload)
    print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
