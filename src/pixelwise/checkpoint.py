"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded safely.

The model is stored by registry name and constructor kwargs beside its weights (as in
nanoGPT), so nothing pickled is needed to rebuild it, and every load uses
`torch.load(weights_only=True)`: a file that would run code on load is refused.

This is the one module that knows the checkpoint layout. Readers (inference, export,
evaluation, report, serve, commands) call `load_model()` or `read_meta()` and get a typed
`CheckpointMeta`; none of them indexes the checkpoint dict. It sits below all of them and
imports only the atomic writer, errors, tasks and models (see docs/architecture.md, "Layers").
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from pixelwise import atomic
from pixelwise.atomic import remove_temp_files
from pixelwise.errors import CheckpointError, TaskError
from pixelwise.tasks import Task

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
    return atomic.torch_save(path, checkpoint)


def copy_checkpoint(source: str | Path, path: str | Path) -> Path:
    """Copy a saved checkpoint to `path` with the same atomic write (best.pt from last.pt,
    without serialising the model and optimizer a second time)."""
    return atomic.copy_file(source, path)


def remove_interrupted_saves(folder: str | Path) -> list[Path]:
    """Delete the temp files of saves that were killed mid-write (`.NAME.XXXX.tmp`).

    A SIGKILL or power loss during `save_checkpoint` leaves its temp file behind; the real file
    was never touched. Call this only when no other process writes to `folder`, as the trainer
    does before its first save.
    """
    return remove_temp_files(folder)


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
    CheckpointMeta.from_dict(checkpoint, source=path)  # a malformed description fails here, by name
    return checkpoint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build_model(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    return _build(CheckpointMeta.from_dict(checkpoint), checkpoint)


def _build(meta: "CheckpointMeta", checkpoint: dict[str, Any], source: str | Path | None = None) -> nn.Module:
    from pixelwise.models import create_model

    where = f"{source}: " if source is not None else ""
    if "state_dict" not in checkpoint:
        raise CheckpointError(f"{where}checkpoint lacks the 'state_dict' entry")
    # The state dict replaces any starting weights: a trained model never needs that file again.
    kwargs = {k: v for k, v in meta.model_kwargs.items() if k != "encoder_weights"}
    model = create_model(meta.model_name, **kwargs)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{where}weights do not match model {meta.model_name!r}: {_first_line(exc)}") from None
    return model.eval()


def load_model(source: str | Path | dict[str, Any], device: str | torch.device = "cpu") -> tuple[nn.Module, "CheckpointMeta"]:
    """(model in eval mode on `device`, its `CheckpointMeta`) from a checkpoint file (.pt or
    model.safetensors) or an already loaded checkpoint dict. Every reader of checkpoints uses this."""
    if isinstance(source, dict):
        checkpoint, where = source, None
    else:
        checkpoint, where = load_checkpoint(source), source
    meta = CheckpointMeta.from_dict(checkpoint, source=where)
    return _build(meta, checkpoint, where).to(device), meta


def read_meta(source: str | Path | dict[str, Any]) -> "CheckpointMeta":
    """The `CheckpointMeta` of a checkpoint file or dict, without building the model."""
    if isinstance(source, dict):
        return CheckpointMeta.from_dict(source)
    return CheckpointMeta.from_dict(load_checkpoint(source), source=source)


def resolve_checkpoint(source: str | Path) -> tuple[Path, Path]:
    """(checkpoint file, run folder) for a checkpoint path or a run folder (best.pt, else last.pt)."""
    source = Path(source)
    if source.is_dir():
        for name in ("best.pt", "last.pt"):
            candidate = source / "checkpoints" / name
            if candidate.is_file():
                return candidate, source
        raise CheckpointError(f"{source}: no checkpoints/best.pt or checkpoints/last.pt in this run folder")
    if not source.exists():
        raise CheckpointError(f"{source}: no such checkpoint or run folder")
    run_dir = source.parent.parent if source.parent.name == "checkpoints" else source.parent
    return source, run_dir


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything about a checkpoint except its tensors: how to rebuild the model, the task,
    the classes and the input preprocessing. Built only by `from_dict`, which checks each
    entry and raises `CheckpointError` naming the file and the entry at fault."""

    model_name: str
    task: Task
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()                     # empty: the checkpoint names none
    class_colors: tuple[tuple[int, int, int], ...] = ()   # empty: the checkpoint has no palette
    ignore_index: int = 255
    mean: tuple[float, ...] | None = None                 # per input channel, 0..1 scale
    std: tuple[float, ...] | None = None
    in_channels: int = 3
    crop_size: int | None = None                          # training crop (informational)
    epoch: int | None = None                              # epochs done when saved (training checkpoints)
    data_root: str | None = None                          # the data it was trained on (config.data.root)
    pretrained: Mapping[str, Any] | None = None           # starting encoder weights: name, sha256, licence...
    temperature: tuple[float, ...] | None = None          # fitted by `pixelwise calibrate` (optional entry)
    format: str = FORMAT

    @classmethod
    def from_dict(cls, checkpoint: Mapping[str, Any], source: str | Path | None = None) -> "CheckpointMeta":
        """Read the description part of a checkpoint (or safetensors metadata) dict."""
        where = f"{source}: " if source is not None else ""

        def bad(entry: str, problem: str) -> CheckpointError:
            return CheckpointError(f"{where}checkpoint entry {entry!r} {problem}")

        if not isinstance(checkpoint, Mapping):
            raise CheckpointError(f"{where}not a pixelwise checkpoint (expected a dict, got {type(checkpoint).__name__})")
        fmt = checkpoint.get("format", FORMAT)
        if fmt != FORMAT:
            raise bad("format", f"is {fmt!r}; this version reads {FORMAT!r}")
        model = checkpoint.get("model")
        if not isinstance(model, Mapping) or not isinstance(model.get("name"), str) or not model["name"]:
            raise bad("model", "must be a dict with a model 'name' (and optional 'kwargs')")
        kwargs = model.get("kwargs") or {}
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise bad("model.kwargs", "must be a dict of keyword arguments")
        task_dict = checkpoint.get("task")
        if not isinstance(task_dict, Mapping):
            raise bad("task", "is missing or not a dict")
        try:
            task = Task.from_dict(dict(task_dict))
        except (TaskError, TypeError, ValueError) as exc:
            raise bad("task", f"is invalid: {_first_line(exc)}") from None

        classes = checkpoint.get("classes") or {}
        if not isinstance(classes, Mapping):
            raise bad("classes", "must be a dict (names, colors, ignore_index)")
        names = classes.get("names") or []
        if not isinstance(names, (list, tuple)):
            raise bad("classes.names", "must be a list of class names")
        colors = classes.get("colors") or []
        try:
            palette = tuple(tuple(int(v) for v in c) for c in colors)
        except (TypeError, ValueError):
            raise bad("classes.colors", "must be a list of [r, g, b] colours") from None
        if any(len(c) != 3 for c in palette):
            raise bad("classes.colors", "must be a list of [r, g, b] colours")
        try:
            ignore_index = int(classes.get("ignore_index", task.ignore_index))
        except (TypeError, ValueError):
            raise bad("classes.ignore_index", "must be an integer") from None

        pre = checkpoint.get("preprocess") or {}
        if not isinstance(pre, Mapping):
            raise bad("preprocess", "must be a dict (mean, std, in_channels, crop_size)")
        try:
            in_channels = int(pre.get("in_channels") or kwargs.get("in_channels", 3))
            mean = None if pre.get("mean") is None else tuple(float(v) for v in pre["mean"])
            std = None if pre.get("std") is None else tuple(float(v) for v in pre["std"])
            crop = None if not pre.get("crop_size") else int(pre["crop_size"])
        except (TypeError, ValueError):
            raise bad("preprocess", "holds a value of the wrong type (mean/std: lists of numbers, "
                                    "in_channels/crop_size: integers)") from None
        for entry, values in (("preprocess.mean", mean), ("preprocess.std", std)):
            if values is not None and len(values) != in_channels:
                raise bad(entry, f"has {len(values)} values for {in_channels} input channel(s)")

        pretrained = checkpoint.get("pretrained")
        if pretrained is not None and not isinstance(pretrained, Mapping):
            raise bad("pretrained", "must be a dict (name, sha256, licence, ...) or absent")

        config = checkpoint.get("config") or {}
        data = config.get("data") if isinstance(config, Mapping) else None
        data_root = data.get("root") if isinstance(data, Mapping) else None
        epoch = checkpoint.get("epoch")
        temperature = _temperature(checkpoint.get("calibration"), task, bad)
        return cls(model_name=model["name"], model_kwargs=dict(kwargs), task=task,
                   class_names=tuple(str(n) for n in names), class_colors=palette, ignore_index=ignore_index,
                   mean=mean, std=std, in_channels=in_channels, crop_size=crop,
                   epoch=None if epoch is None else int(epoch),
                   data_root=None if data_root is None else str(data_root),
                   pretrained=None if pretrained is None else dict(pretrained), temperature=temperature,
                   format=fmt)

    def to_dict(self) -> dict[str, Any]:
        """The description entries of a checkpoint dict; `from_dict(meta.to_dict()) == meta`."""
        d: dict[str, Any] = {
            "format": self.format,
            "model": {"name": self.model_name, "kwargs": dict(self.model_kwargs)},
            "task": self.task.to_dict(),
            "classes": {"names": list(self.class_names), "colors": [list(c) for c in self.class_colors],
                        "ignore_index": self.ignore_index},
            "preprocess": {"mean": None if self.mean is None else list(self.mean),
                           "std": None if self.std is None else list(self.std),
                           "in_channels": self.in_channels, "crop_size": self.crop_size},
        }
        if self.epoch is not None:
            d["epoch"] = self.epoch
        if self.data_root is not None:
            d["config"] = {"data": {"root": self.data_root}}
        if self.pretrained is not None:
            d["pretrained"] = dict(self.pretrained)
        if self.temperature is not None:
            d["calibration"] = {"temperature": list(self.temperature)}
        return d


def _temperature(entry: Any, task: Task, bad: Any) -> tuple[float, ...] | None:
    """The optional `calibration: {temperature: [T] or [T_1..T_K], ...}` entry, checked."""
    if not entry:
        return None
    values = entry.get("temperature") if isinstance(entry, Mapping) else None
    try:
        temperature = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise bad("calibration.temperature", "must be a list of numbers") from None
    if not temperature or not all(math.isfinite(t) and t > 0 for t in temperature):
        raise bad("calibration.temperature", f"must hold positive finite numbers, got {list(temperature)}")
    if len(temperature) not in (1, task.out_channels):
        raise bad("calibration.temperature", f"has {len(temperature)} values; expected 1 or {task.out_channels} "
                                             "(one per output channel)")
    return temperature


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
    """Weights for deployment: RUN_DIR/model.safetensors with the model spec, task, classes,
    preprocess and starting weights (pretrained) as JSON under the header metadata key "pixelwise"."""
    import json

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {key: checkpoint.get(key) for key in ("model", "task", "classes", "preprocess", "pretrained")}
    if checkpoint.get("calibration"):  # optional: the temperature fitted by `pixelwise calibrate`
        meta["calibration"] = checkpoint["calibration"]
    meta["format"] = FORMAT
    # safetensors refuses tensors that share storage; clone gives each its own.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in checkpoint["state_dict"].items()}
    with atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={SAFETENSORS_METADATA_KEY: json.dumps(meta)})
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
