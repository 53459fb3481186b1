"""What the defaults choose on this machine: precision (`resolve_runtime`) and inference backend.

The rows are the product's own decisions, not re-implementations: `resolve_runtime("auto",
"auto", "auto")` and `pixelwise.inference.backend.select(..., "auto")` on a freshly
initialised U-Net checkpoint (base 16, depth 4, the quickstart's), probed at 256x256.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pixelwise.bench.harness import Context, area_result

MODEL = ("unet", {"base_channels": 16, "depth": 4})


def run(ctx: Context) -> dict[str, Any]:
    import torch

    from pixelwise import atomic
    from pixelwise.bench.bench_onnx import make_checkpoint
    from pixelwise.inference.backend import select
    from pixelwise.runtime import resolve_runtime

    runtime = resolve_runtime("auto", "auto", "auto")
    rows = [{"what": "precision (train, predict, evaluate, serve)", "chosen": runtime.describe(),
             "why": "resolve_runtime: bf16 only where a probe conv measures it faster than fp32"}]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unet.pt"
        atomic.torch_save(path, make_checkpoint(*MODEL)[0])
        ctx.log("  probing the inference backend (export + parity + timing)")
        choice, _ = select(path, "auto", "auto", "auto", "auto")
    rows.append({"what": f"inference backend ({MODEL[0]} {MODEL[1]})", "chosen": f"{choice.backend} {choice.precision}",
                 "why": choice.reason})
    return area_result(command=ctx.command("defaults"),
                       columns=[("what", "default"), ("chosen", "chosen here"), ("why", "why")], rows=rows,
                       notes=[f"torch threads: {torch.get_num_threads()}."])
