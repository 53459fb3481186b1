"""The `serve` area: runs the service's load test (pixelwise.bench.bench_serve) in a subprocess.

bench_serve.py serves a tiny U-Net in-process on 127.0.0.1 and prints one JSON line
(throughput, latency percentiles, errors); this module only runs it and tabulates the line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from pixelwise.bench.harness import Context, area_result, goal, package_env

AREA = "serve"
MODULE = "pixelwise.bench.bench_serve"


def run(ctx: Context) -> dict[str, Any]:
    import httpx, uvicorn  # noqa: F401,E401  (missing web packages: "not available", not an error)
    requests, concurrency = (40, 8) if ctx.quick else (500, 16)
    args = [sys.executable, "-m", MODULE, "--requests", str(requests), "--concurrency", str(concurrency)]
    ctx.log(f"  {requests} requests, {concurrency} concurrent, via {MODULE}")
    proc = subprocess.run(args, env=package_env(), capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench_serve.py printed nothing (exit {proc.returncode}): {tail}")
    result = json.loads(lines[-1])
    latency = result.get("latency_ms", {})
    row = {
        "requests": result.get("requests"), "concurrency": result.get("concurrency"),
        "errors": result.get("errors"), "rps": result.get("throughput_rps"), "p50": latency.get("p50"),
        "p90": latency.get("p90"), "p99": latency.get("p99"), "max": latency.get("max"),
        "format": result.get("format"), "image_bytes": result.get("image_bytes"),
        "command": f"python -m {MODULE} " + " ".join(args[3:]),
    }
    errors = result.get("errors")
    return area_result(
        command=ctx.command(AREA),
        columns=[("requests", "requests"), ("concurrency", "concurrent"), ("errors", "errors"),
                 ("rps", "requests/s"), ("p50", "p50 ms"), ("p90", "p90 ms"), ("p99", "p99 ms"),
                 ("max", "max ms"), ("format", "response"), ("image_bytes", "upload bytes")],
        rows=[row],
        goals=[goal(f"Service under load ({requests} requests, {concurrency} concurrent) without errors",
                    "0 errors", errors, errors == 0 if errors is not None else None)],
        notes=[f"One load-test run of {MODULE} (owned by the service): a tiny U-Net served by "
               "uvicorn on 127.0.0.1 in the same process as the httpx client, so client and server share "
               "the cores. " + (f"First failures: {result['first_failures']}" if result.get("first_failures")
                                else "")],
    )
