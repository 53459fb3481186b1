"""The `serve` area: runs the service engineer's bench/bench_serve.py load test in a subprocess.

bench_serve.py serves a tiny U-Net in-process on 127.0.0.1 and prints one JSON line
(throughput, latency percentiles, errors); this module only runs it and tabulates the line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import Context, area_result, goal

AREA = "serve"
REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "bench" / "bench_serve.py"


def run(ctx: Context) -> dict[str, Any]:
    if not SCRIPT.is_file():
        raise ImportError(f"{SCRIPT.relative_to(REPO_ROOT)} is missing")
    requests, concurrency = (40, 8) if ctx.quick else (500, 16)
    args = [sys.executable, str(SCRIPT), "--requests", str(requests), "--concurrency", str(concurrency)]
    ctx.log(f"  {requests} requests, {concurrency} concurrent, via {SCRIPT.name}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
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
        "command": "python bench/bench_serve.py " + " ".join(args[2:]),
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
        notes=["One load-test run of bench/bench_serve.py (owned by the service): a tiny U-Net served by "
               "uvicorn on 127.0.0.1 in the same process as the httpx client, so client and server share "
               "the cores. " + (f"First failures: {result['first_failures']}" if result.get("first_failures")
                                else "")],
    )
