"""Export trained models: ONNX (with optional in-graph preprocessing and decoding) and TorchScript.

onnx and onnxruntime are imported inside the functions that need them.
"""

from pixelwise.export.onnx import ExportResult, export_onnx, read_metadata
from pixelwise.export.torchscript import export_torchscript

__all__ = ["ExportResult", "export_onnx", "read_metadata", "export_torchscript"]
