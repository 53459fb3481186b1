"""Matmul peak of this machine in fp32 and bf16: the physical reference for model GFLOP/s."""

from __future__ import annotations

from typing import Any

import torch

from pixelwise.bench.harness import Context, area_result, interleave, rate, summarize

AREA = "matmul"


def matmul_peak(n: int, *, warmup: int, repeats: int) -> dict[str, dict[str, Any]]:
    """GFLOP/s of an n x n x n matmul in fp32 and bf16, interleaved; stats per dtype."""
    flops = 2.0 * n**3
    gen = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    times = interleave(
        {"fp32": lambda: torch.mm(a32, b32), "bf16": lambda: torch.mm(a16, b16)},
        warmup=warmup,
        repeats=repeats,
    )
    return {dtype: rate(summarize(t), flops / 1e9).to_dict() for dtype, t in times.items()}


def run(ctx: Context) -> dict[str, Any]:
    n = 1024 if ctx.quick else 4096
    peaks = matmul_peak(n, warmup=ctx.warmup, repeats=ctx.repeats)
    threads = torch.get_num_threads()
    rows = [
        {"dtype": dtype, "size": f"{n}x{n}x{n}", "gflops": s["median"], "min": s["min"],
         "max": s["max"], "n": s["n"], "threads": threads}
        for dtype, s in peaks.items()
    ]
    return area_result(
        command=ctx.command(AREA),
        columns=[("dtype", "dtype"), ("size", "matmul"), ("gflops", "GFLOP/s (median)"),
                 ("min", "min"), ("max", "max"), ("n", "runs"), ("threads", "threads")],
        rows=rows,
        notes=["torch.mm on square matrices, fp32 and bf16 interleaved; GFLOP/s = 2 n^3 / time. The models "
               "table re-times a 2048 matmul in the same rounds as each model for its '% of peak'."],
    ) | {"peak_gflops": {dtype: s["median"] for dtype, s in peaks.items()}}

