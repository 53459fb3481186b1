"""Load local pretrained encoder weights in torchvision's or timm's key layout.

Nothing is downloaded: `encoder_weights` is a path to a .pth/.pt (loaded with
weights_only) or .safetensors file. Keys are matched by name after removing wrapper
prefixes; when the names differ (timm's MobileNetV3 calls its blocks `blocks.i.j.conv_pw`)
but the tensors line up one-to-one in order with equal shapes, they are matched by order.
The first convolution adapts when the model's in_channels is not 3.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from pixelwise.errors import ConfigError

_PREFIXES = ("module.", "_orig_mod.", "model.", "encoder.", "backbone.", "segformer.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or torch file (a bare state dict, or one under 'state_dict'/'model')."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: encoder weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable weights file: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a dict of tensors (a state dict)")
    return state


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn an RGB first-conv weight (out, 3, k, k) into (out, in_channels, k, k).

    1 channel: the mean over RGB (a gray image normalised like one RGB channel then gives
    about the same activation scale). More: repeat RGB cyclically and scale by 3/in_channels
    so the sum over inputs keeps its magnitude.
    """
    src = weight.shape[1]
    if src == in_channels:
        return weight
    if in_channels == 1:
        return weight.mean(dim=1, keepdim=True)
    reps = -(-in_channels // src)
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (src / in_channels)


def map_to_model(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], first_conv: str,
                 in_channels: int) -> dict[str, torch.Tensor]:
    """Match `state` to the keys of `target`; raise ConfigError when that is impossible."""
    # BatchNorm's step counters carry no learned value and some files leave them out.
    counters = {k: v for k, v in target.items() if k.endswith("num_batches_tracked")}
    state = {k: v for k, v in strip_prefixes(state).items() if not k.endswith("num_batches_tracked")}
    names = [k for k in target if k not in counters]
    if all(k in state for k in names):
        mapped = {k: state[k] for k in names}
    else:
        # Positional match: drop the classifier-only tensors the encoder lacks, from the end.
        values = list(state.values())
        if len(values) < len(names):
            missing = [k for k in target if k not in state][:5]
            raise ConfigError(f"weights lack {len(names) - len(values)}+ tensors the encoder needs, e.g. {missing}")
        mapped = dict(zip(names, values[: len(names)]))
    if first_conv and first_conv in mapped:
        mapped[first_conv] = adapt_first_conv(mapped[first_conv], in_channels)
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise ConfigError(
                f"weight {key!r} has shape {tuple(value.shape)}, the encoder expects {tuple(target[key].shape)} "
                "(different architecture or width?)"
            )
    mapped.update(counters)
    return mapped


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local weights file into `encoder` (in place); errors name the file."""
    target = encoder.state_dict()
    first_conv = getattr(encoder, "first_conv", "")
    in_channels = target[first_conv].shape[1] if first_conv in target else 3
    try:
        mapped = map_to_model(read_state_dict(path), target, first_conv, in_channels)
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc}") from None
    encoder.load_state_dict(mapped, strict=True)
