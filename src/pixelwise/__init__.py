"""pixelwise: semantic segmentation on PyTorch.

The public surface is small and imported lazily, so `import pixelwise` (and the CLI's
`--help`) does not pay for torch until a name that needs it is used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": ("pixelwise.models", "create_model"),
    "list_models": ("pixelwise.models", "list_models"),
    "Task": ("pixelwise.tasks", "Task"),
    "Predictor": ("pixelwise.inference", "Predictor"),
    "load_checkpoint": ("pixelwise.checkpoint", "load_checkpoint"),
    "load_model": ("pixelwise.checkpoint", "load_model"),
    "CheckpointMeta": ("pixelwise.checkpoint", "CheckpointMeta"),
    "open_dataset": ("pixelwise.data", "open_dataset"),
    "build_loss": ("pixelwise.losses", "build_loss"),
    "ConfusionMatrix": ("pixelwise.metrics", "ConfusionMatrix"),
    "train": ("pixelwise.api", "train"),
    "evaluate": ("pixelwise.api", "evaluate"),
    "predict": ("pixelwise.api", "predict"),
    "Run": ("pixelwise.api", "Run"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'pixelwise' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value
