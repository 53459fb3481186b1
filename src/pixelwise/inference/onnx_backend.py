"""Run an ONNX file written by `pixelwise export` through onnxruntime, as a model function.

`OnnxModel` is called like the PyTorch model function of a Predictor: a batch tensor in,
a tensor out (logits, or labels when the graph ends in decoding). The pixelwise metadata
in the file says what the graph expects and returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from pixelwise.errors import CheckpointError

METADATA_KEY = "pixelwise"


class OnnxModel:
    """onnxruntime session + pixelwise metadata.

    Called with (N, C, H, W): float normalised, or raw uint8 when the graph preprocesses itself
    (it is transposed to the graph's NHWC input here). Returns logits float32 (N, K, H, W) or,
    when the graph decodes, labels (N, H, W) / multilabel (N, K, H, W).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError("running .onnx files needs onnxruntime: pip install 'pixelwise[export]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers or ort.get_available_providers()))
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise CheckpointError(f"{self.path}: not a loadable ONNX model: {str(exc).splitlines()[0]}") from None
        custom = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in custom:
            raise CheckpointError(f"{self.path}: ONNX file has no pixelwise metadata (export it with `pixelwise export`)")
        self.metadata: dict[str, Any] = json.loads(custom[METADATA_KEY])
        self.input_name = self.session.get_inputs()[0].name
        self.preprocesses = bool(self.metadata.get("with_preprocessing"))
        self.decodes = bool(self.metadata.get("with_decoding"))

    def __call__(self, x: Tensor) -> Tensor:
        if self.preprocesses:
            array = x.permute(0, 2, 3, 1).contiguous().numpy().astype(np.uint8, copy=False)  # (N, H, W, C)
        else:
            array = x.float().contiguous().numpy()
        out = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(out if self.decodes else out.astype(np.float32, copy=False))


class OnnxModule(torch.nn.Module):
    """An exported logits graph as an `nn.Module` (no parameters), for loops written for PyTorch models."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.onnx = OnnxModel(path, providers=["CPUExecutionProvider"])
        if self.onnx.decodes or self.onnx.preprocesses:
            raise CheckpointError(f"{path}: expected a plain logits graph (no in-graph preprocessing or decoding)")

    def forward(self, x: Tensor) -> Tensor:
        return self.onnx(x.cpu())
