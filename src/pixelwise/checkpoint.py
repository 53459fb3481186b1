"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded safely.

The model is stored by registry name and constructor kwargs beside its weights (as in
nanoGPT), so nothing pickled is needed to rebuild it, and every load uses
`torch.load(weights_only=True)`: a file that would run code on load is refused.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixelwise.errors import CheckpointError

FORMAT = "pixelwise-checkpoint/1"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrapped_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without DDP (`module.`) or torch.compile (`_orig_mod.`) prefixes."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    state = model.state_dict()
    cleaned = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value.detach().cpu()
    return cleaned


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write `checkpoint` to `path` atomically: temp file in the same folder, fsync, rename.

    A crash at any moment leaves either the previous file or the new one, never a torn file.
    """
    checkpoint = {"format": FORMAT, **checkpoint}
    return _write_atomically(Path(path), lambda handle: torch.save(checkpoint, handle))


def copy_checkpoint(source: str | Path, path: str | Path) -> Path:
    """Copy a saved checkpoint to `path` with the same atomic write (best.pt from last.pt,
    without serialising the model and optimizer a second time)."""
    with open(source, "rb") as src:
        return _write_atomically(Path(path), lambda handle: shutil.copyfileobj(src, handle, 1 << 20))


def _write_atomically(path: Path, write: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def remove_interrupted_saves(folder: str | Path) -> list[Path]:
    """Delete the temp files of saves that were killed mid-write (`.NAME.XXXX.tmp`).

    A SIGKILL or power loss during `save_checkpoint` leaves its temp file behind; the real file
    was never touched. Call this only when no other process writes to `folder`, as the trainer
    does before its first save.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform allows opening a directory.
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a pixelwise checkpoint safely (weights_only); clear errors for every failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix.lower() == ".safetensors":
        # Deployment weights (model.safetensors) carry the same model spec, task and classes.
        return load_safetensors(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects that would run code when "
            f"unpickled (only tensors and plain values are allowed) ({_first_line(exc)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {_first_line(exc)}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pixelwise checkpoint (expected format {FORMAT!r})")
    for key in ("model", "task", "state_dict"):
        if key not in checkpoint:
            raise CheckpointError(f"{path}: checkpoint lacks the {key!r} entry")
    return checkpoint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build_model(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    from pixelwise.models import create_model

    spec = checkpoint["model"]
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not match model {spec['name']!r}: {_first_line(exc)}") from None
    return model.eval()


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch, numpy and python `random` as tensors and plain lists.

    numpy's and python's states are tuples holding arrays/ints; stored as lists so the
    checkpoint still loads with weights_only=True.
    """
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


SAFETENSORS_METADATA_KEY = "pixelwise"


def save_safetensors(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Weights for deployment: RUN_DIR/model.safetensors with the model spec, task, classes and
    preprocess as JSON under the header metadata key "pixelwise"."""
    import json

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {key: checkpoint.get(key) for key in ("model", "task", "classes", "preprocess")}
    meta["format"] = FORMAT
    # safetensors refuses tensors that share storage; clone gives each its own.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in checkpoint["state_dict"].items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={SAFETENSORS_METADATA_KEY: json.dumps(meta)})
    os.replace(tmp, path)
    return path


def load_safetensors(path: str | Path) -> dict[str, Any]:
    """Read model.safetensors back as a checkpoint-shaped dict (model, task, classes, preprocess, state_dict)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(f"{path}: not a readable safetensors file: {_first_line(exc)}") from None
    if SAFETENSORS_METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: safetensors file lacks pixelwise metadata (model spec, task)")
    try:
        meta = json.loads(metadata[SAFETENSORS_METADATA_KEY])
    except ValueError as exc:
        raise CheckpointError(f"{path}: the pixelwise metadata in this safetensors file is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "model" not in meta or "task" not in meta:
        raise CheckpointError(f"{path}: the pixelwise metadata lacks the model spec or the task")
    return {**meta, "state_dict": state}
