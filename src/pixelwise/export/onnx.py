"""Export a checkpoint to ONNX with dynamic batch, height and width, and check parity.

Optionally the graph includes preprocessing (uint8 NHWC image -> normalised float NCHW) and
decoding (argmax, or a threshold for binary/multilabel), so the file maps a uint8 image to a
label map on its own. Task, classes, colours, mean/std and what the graph includes are
stored in the ONNX metadata_props, so `Predictor.from_onnx` needs nothing else.

Exporter choice (torch 2.13): the TorchScript-based exporter (`dynamo=False`) with
`dynamic_axes` is tried first: it handles every registered model, and because a traced
`x.shape` becomes a Shape op, the models' pad-to-stride arithmetic stays dynamic. If it is
unavailable or fails, the dynamo exporter (`dynamo=True`, `dynamic_shapes`) is tried. Either
way the result is only accepted after a parity check at two input sizes (one that the
model must pad to its output stride, one it need not), which catches frozen shapes.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pixelwise import atomic
from pixelwise.checkpoint import CheckpointMeta, load_model
from pixelwise.inference.calibration import with_calibration
from pixelwise.errors import CheckpointError, PixelwiseError
from pixelwise.tasks import Task

METADATA_KEY = "pixelwise"
OPSET = 17
# The traced example must not be a multiple of any output stride: models skip padding when
# none is needed, and a trace only records the branch it took. Parity then checks a size
# that needs padding and one that needs none.
EXAMPLE_SIZE = (67, 45)


class ExportWrapper(nn.Module):
    """model + optional in-graph preprocessing and decoding.

    Input: float (N, C, H, W) normalised, or with preprocessing uint8 (N, H, W, C).
    Output: logits (N, K, H, W), or with decoding uint8 labels (N, H, W) / multilabel (N, K, H, W).
    """

    def __init__(self, model: nn.Module, task: Task, mean: Sequence[float], std: Sequence[float],
                 with_preprocessing: bool = False, with_decoding: bool = False):
        super().__init__()
        self.model = model
        self.kind = task.kind
        self.with_preprocessing = with_preprocessing
        self.with_decoding = with_decoding
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0))
        # sigmoid(x) > t  <=>  x > logit(t): thresholding logits avoids the sigmoid in the graph.
        thr = task.thresholds().clamp(1e-6, 1 - 1e-6)
        self.register_buffer("logit_threshold", torch.log(thr / (1 - thr)).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.with_preprocessing:
            x = (x.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std  # (N, C, H, W)
        logits = self.model(x)  # (N, K, H, W)
        if not self.with_decoding:
            return logits
        if self.kind == "multiclass":
            return logits.argmax(dim=1).to(torch.uint8)  # (N, H, W)
        above = (logits > self.logit_threshold).to(torch.uint8)  # (N, K, H, W)
        return above[:, 0] if self.kind == "binary" else above


@dataclass
class ExportResult:
    path: Path
    exporter: str                  # "torchscript" (dynamo=False) or "dynamo"
    max_abs_diff: float            # onnxruntime vs PyTorch over the parity inputs
    checked_sizes: list[tuple[int, int]]


def checkpoint_metadata(meta: CheckpointMeta, with_preprocessing: bool, with_decoding: bool) -> dict[str, Any]:
    """What a Predictor needs besides the graph (stored as JSON in metadata_props)."""
    in_channels = meta.in_channels
    return {
        "format": "pixelwise-onnx/1",
        "task": meta.task.to_dict(),
        "class_names": list(meta.class_names),
        "colors": [list(c) for c in meta.class_colors],
        "ignore_index": meta.ignore_index,
        "mean": list(meta.mean or [0.0] * in_channels),
        "std": list(meta.std or [1.0] * in_channels),
        "in_channels": in_channels,
        "model": {"name": meta.model_name, "kwargs": dict(meta.model_kwargs)},
        "with_preprocessing": bool(with_preprocessing),
        "with_decoding": bool(with_decoding),
        "temperature": None if meta.temperature is None else list(meta.temperature),  # already in the graph
    }


def _example_input(meta: dict[str, Any], batch: int, height: int, width: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    c = meta["in_channels"]
    if meta["with_preprocessing"]:
        return torch.randint(0, 256, (batch, height, width, c), generator=gen, dtype=torch.uint8)
    return torch.randn(batch, c, height, width, generator=gen)


def _export_torchscript(wrapper: nn.Module, example: Tensor, path: Path) -> None:
    names = {"input": {0: "batch", 1: "height", 2: "width"} if example.dtype == torch.uint8
             else {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic are expected
        torch.onnx.export(wrapper, (example,), str(path), input_names=["input"], output_names=["output"],
                          dynamic_axes={**names, "output": {0: "batch"}}, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)


def _export_dynamo(wrapper: nn.Module, example: Tensor, path: Path) -> None:
    from torch.export import Dim

    batch, height, width = Dim("batch", min=1, max=1024), Dim("height", min=8, max=65536), Dim("width", min=8, max=65536)
    axes = {0: batch, 1: height, 2: width} if example.dtype == torch.uint8 else {0: batch, 2: height, 3: width}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, (example,), dynamo=True, dynamic_shapes=({**axes},),
                                    input_names=["input"], output_names=["output"], opset_version=max(OPSET, 18),
                                    verbose=False)
        program.save(str(path))


def add_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    for key in ("task", "with_preprocessing", "with_decoding"):  # also readable by other tools
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(meta[key])
    onnx.save(model, str(path))


def parity_check(path: Path, wrapper: nn.Module, meta: dict[str, Any],
                 sizes: Sequence[tuple[int, int]] = ((61, 94), (64, 96)), batch: int = 2) -> float:
    """Run the ONNX file in onnxruntime and the wrapper in PyTorch; max |difference| over `sizes`.

    With decoding the outputs are labels; the difference then is the fraction of pixels that
    disagree (an argmax tie at float precision can flip a few)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a shape failure is reported by our own error, not ORT's log
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, (h, w) in enumerate(sizes):
        x = _example_input(meta, batch, h, w, seed=i + 1)
        with torch.inference_mode():
            expected = wrapper(x).float().numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        if got.shape != expected.shape:
            raise PixelwiseError(f"ONNX parity: output shape {got.shape} != PyTorch {expected.shape} at input {h}x{w}")
        if meta["with_decoding"]:
            diff = float((got != expected).mean())
        else:
            diff = float(np.abs(got.astype(np.float32) - expected).max())
        worst = max(worst, diff)
    return worst


def export_onnx(checkpoint: str | Path | dict[str, Any], out: str | Path, *, with_preprocessing: bool = False,
                with_decoding: bool = False, check: bool = True, tolerance: float = 1e-3,
                exporter: str = "auto", parity_sizes: Sequence[tuple[int, int]] = ((61, 94), (64, 96))) -> ExportResult:
    """Export a checkpoint (path or loaded dict) to `out` (.onnx) and verify it in onnxruntime.

    Raises PixelwiseError when no exporter produces a file that matches PyTorch within
    `tolerance` (max |logit difference|; with decoding: fraction of differing labels).
    """
    model, ckpt_meta = load_model(checkpoint)
    meta = checkpoint_metadata(ckpt_meta, with_preprocessing, with_decoding)
    # A fitted temperature goes into the graph (logits / T), so every runtime applies it.
    model = with_calibration(model, ckpt_meta.temperature).float().eval()
    wrapper = ExportWrapper(model, Task.from_dict(meta["task"]), meta["mean"], meta["std"],
                            with_preprocessing, with_decoding).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = _example_input(meta, 1, *EXAMPLE_SIZE)
    order = {"auto": ["torchscript", "dynamo"], "torchscript": ["torchscript"], "dynamo": ["dynamo"]}.get(exporter)
    if order is None:
        raise PixelwiseError(f"unknown exporter {exporter!r}; accepted: auto, torchscript, dynamo")
    failures: list[str] = []
    for name in order:
        try:
            with atomic.atomic_path(out) as tmp:  # `out` appears only once the file passed the parity check
                (_export_torchscript if name == "torchscript" else _export_dynamo)(wrapper, example, tmp)
                add_metadata(tmp, meta)
                diff = parity_check(tmp, wrapper, meta, parity_sizes) if check else math.nan
                if check and not diff <= tolerance:
                    raise PixelwiseError(f"parity check failed, max difference {diff:.3g} > {tolerance:g}")
        except PixelwiseError as exc:
            failures.append(f"{name}: {exc}")
            continue
        except Exception as exc:  # exporter internals raise many types; try the next exporter
            failures.append(f"{name}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
            continue
        return ExportResult(out, name, diff, list(parity_sizes) if check else [])
    raise PixelwiseError(f"ONNX export of model {meta['model']['name']!r} failed: " + "; ".join(failures))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The pixelwise metadata of an exported ONNX file (CheckpointError if absent)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable ONNX file: {exc}") from None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise CheckpointError(f"{path}: ONNX file has no pixelwise metadata (export it with `pixelwise export`)")
