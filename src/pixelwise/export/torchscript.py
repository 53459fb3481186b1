"""Export a checkpoint to TorchScript (a .pt loadable with `torch.jit.load`, no pixelwise needed).

`torch.jit.script` is tried first (keeps shape-dependent code, e.g. padding to the output
stride, truly dynamic); models it cannot compile are traced, and a traced module is only
accepted if it matches PyTorch at a second input size (tracing can freeze shapes).
Pixelwise metadata (same JSON as the ONNX export) travels in the archive as extra file
"pixelwise.json": `torch.jit.load(path, _extra_files={"pixelwise.json": ""})`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from pixelwise import atomic
from pixelwise.checkpoint import load_model
from pixelwise.errors import PixelwiseError
from pixelwise.export.onnx import EXAMPLE_SIZE, ExportResult, ExportWrapper, _example_input, checkpoint_metadata
from pixelwise.tasks import Task


def export_torchscript(checkpoint: str | Path | dict[str, Any], out: str | Path, *, with_preprocessing: bool = False,
                       with_decoding: bool = False, tolerance: float = 1e-4,
                       parity_sizes: Sequence[tuple[int, int]] = ((61, 94), (64, 96))) -> ExportResult:
    """Write a TorchScript module to `out`; checks it against eager PyTorch at `parity_sizes`."""
    model, ckpt_meta = load_model(checkpoint)
    meta = checkpoint_metadata(ckpt_meta, with_preprocessing, with_decoding)
    wrapper = ExportWrapper(model.float().eval(), Task.from_dict(meta["task"]), meta["mean"],
                            meta["std"], with_preprocessing, with_decoding).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for method in ("script", "trace"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit deprecation and tracer warnings
                if method == "script":
                    module = torch.jit.script(wrapper)
                else:
                    module = torch.jit.trace(wrapper, (_example_input(meta, 1, *EXAMPLE_SIZE),), check_trace=False)
            diff = _max_diff(module, wrapper, meta, parity_sizes)
        except Exception as exc:  # scripting fails with many error types on unsupported Python
            failures.append(f"{method}: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")
            continue
        if not diff <= tolerance:
            failures.append(f"{method}: parity check failed, max difference {diff:.3g} > {tolerance:g}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with atomic.atomic_path(out) as tmp:
                torch.jit.save(module, str(tmp), _extra_files={"pixelwise.json": json.dumps(meta)})
        return ExportResult(out, f"torchscript-{method}", diff, list(parity_sizes))
    raise PixelwiseError(f"TorchScript export of model {meta['model']['name']!r} failed: " + "; ".join(failures))


def _max_diff(module: torch.nn.Module, wrapper: torch.nn.Module, meta: dict[str, Any],
              sizes: Sequence[tuple[int, int]]) -> float:
    worst = 0.0
    for i, (h, w) in enumerate(sizes):
        x = _example_input(meta, 2, h, w, seed=i + 1)
        with torch.inference_mode():
            expected, got = wrapper(x), module(x)
        if got.shape != expected.shape:
            return float("inf")
        if meta["with_decoding"]:
            worst = max(worst, float((got != expected).float().mean()))
        else:
            worst = max(worst, float((got.float() - expected.float()).abs().max()))
    return worst
