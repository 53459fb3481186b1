"""Strict, explained loading of catalogue weights into an encoder.

The file is read once: its bytes are hashed against the pin (a file changed on disk since
it was verified is refused) and then unpickled with weights_only. Its tensor names are
mapped with the entry's `rename`/`drop` rules, the first convolution is adapted when the
model does not take RGB, and the result must match the encoder's state dict exactly:
every missing, unexpected and shape-mismatched key is listed in the error, so a wrong
layout is never half loaded. `strict=False` loads the keys that fit and returns the
report instead.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pixelwise.errors import WeightsError
from pixelwise.weights.cache import CachedWeights, require
from pixelwise.weights.catalogue import WeightsEntry

SHOWN = 8  # keys listed per kind in an error; the counts are always complete


@dataclass
class KeyReport:
    """How a mapped state dict fits an encoder's."""

    missing: list[str] = field(default_factory=list)       # the encoder has them, the file does not
    unexpected: list[str] = field(default_factory=list)    # the file has them, the encoder does not
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (key, file, encoder)
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                more = f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:SHOWN])}{more}")
        if self.mismatched:
            shown = ", ".join(f"{k} file {tuple(a)} vs encoder {tuple(b)}" for k, a, b in self.mismatched[:SHOWN])
            more = f", ... ({len(self.mismatched) - SHOWN} more)" if len(self.mismatched) > SHOWN else ""
            parts.append(f"{len(self.mismatched)} with another shape: {shown}{more}")
        return "; ".join(parts) if parts else "all keys match"


def read_tensors(data: bytes, where: str, safetensors: bool = False) -> dict[str, torch.Tensor]:
    """A flat dict of tensors from a torch file's (or safetensors') bytes; WeightsError otherwise."""
    try:
        if safetensors:
            from safetensors.torch import load as load_safetensors

            state: Any = load_safetensors(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile,
            AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{where}: not a weights file torch can read safely ({first})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{where}: not a weights file (expected a dict of tensors, a state dict)")
    return state


def map_keys(state: dict[str, torch.Tensor], entry: WeightsEntry) -> dict[str, torch.Tensor]:
    """Rename the publisher's keys to the project's encoder names and drop the heads it lacks."""
    out = {}
    for key, value in state.items():
        for source, target in entry.rename:
            if key.startswith(source):
                key = target + key[len(source):]
                break
        if not any(key.startswith(prefix) for prefix in entry.drop):
            out[key] = value
    return out


def compare(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> KeyReport:
    # BatchNorm's step counters carry no learned value; older files leave them out.
    counters = {k for k in target if k.endswith("num_batches_tracked")}
    report = KeyReport()
    report.missing = [k for k in target if k not in state and k not in counters]
    report.unexpected = [k for k in state if k not in target]
    report.mismatched = [(k, tuple(state[k].shape), tuple(target[k].shape)) for k in state
                         if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    return report


def load_into_encoder(encoder: nn.Module, entry: WeightsEntry, *, strict: bool = True,
                      cached: CachedWeights | None = None) -> tuple[CachedWeights, KeyReport]:
    """Load the cached, verified weights `entry` into `encoder` (in place).

    Raises WeightsError when the weights are not cached (with the fetch command), when the
    bytes differ from the pinned digest, when the file is not a state dict, or (strict)
    when any key is missing, unexpected or of another shape.
    """
    from pixelwise.models.pretrained import adapt_first_conv

    cached = cached or require(entry)
    data = cached.path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != cached.sha256:
        raise WeightsError(f"{cached.path}: sha256 {sha256} differs from the one pinned when it was verified "
                           f"({cached.sha256}); delete the file and run `{entry.fetch_command()}` again")
    state = map_keys(read_tensors(data, str(cached.path), cached.path.suffix == ".safetensors"), entry)
    target = encoder.state_dict()
    first_conv = getattr(encoder, "first_conv", "")
    if first_conv in state and first_conv in target and state[first_conv].ndim == 4:
        state[first_conv] = adapt_first_conv(state[first_conv], target[first_conv].shape[1])
    report = compare(state, target)
    if strict and not report.ok:
        raise WeightsError(f"{cached.path}: weights {entry.name} do not fit encoder {entry.encoder!r}: "
                           f"{report.describe()}")
    fitting = {k: v for k, v in state.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    encoder.load_state_dict(fitting, strict=False)
    report.loaded = sum(not k.endswith("num_batches_tracked") for k in fitting)  # learned tensors only
    return cached, report
