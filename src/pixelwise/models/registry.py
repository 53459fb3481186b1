"""The model registry: one name -> one factory, feeding create_model, the CLI and the tests.

Like timm's `@register_model`: each architecture file registers short recipes by name.
Constructor arguments are plain JSON values, so a checkpoint can store
`{"name": ..., "kwargs": {...}}` and rebuild the model without pickled classes.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from pixelwise.errors import ConfigError

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: ModelFactory
    description: str
    # Tiny kwargs that keep the architecture but make it cheap (tests, smoke runs).
    small_kwargs: dict[str, Any] = field(default_factory=dict)

    def accepted_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the factory accepts (besides num_classes, in_channels) and defaults."""
        params = inspect.signature(self.factory).parameters
        return {
            key: (None if p.default is inspect.Parameter.empty else p.default)
            for key, p in params.items()
            if key not in ("num_classes", "in_channels") and p.kind is not inspect.Parameter.VAR_KEYWORD
        }


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, description: str, small_kwargs: dict[str, Any] | None = None
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(num_classes, in_channels=3, **kwargs)` under `name`."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ConfigError(f"model {name!r} is already registered")
        params = inspect.signature(factory).parameters
        if "num_classes" not in params or "in_channels" not in params:
            raise ConfigError(f"model factory for {name!r} must accept num_classes and in_channels")
        _REGISTRY[name] = ModelEntry(name, factory, description, dict(small_kwargs or {}))
        return factory

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build a registered model; it returns raw logits (N, num_classes, H, W) for any H, W.

    Every model also takes `input_scale` (default 1.0): below 1 the network runs on the
    input resized by that factor and its logits are resized back (see models/rescale.py).
    """
    entry = get_entry(name)
    input_scale = kwargs.pop("input_scale", 1.0)
    if not isinstance(input_scale, (int, float)) or isinstance(input_scale, bool) or not 0 < input_scale <= 1:
        raise ConfigError(f"model {name!r}: input_scale must be a number in (0, 1], got {input_scale!r}")
    accepted = entry.accepted_kwargs()
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"model {name!r} does not accept {', '.join(map(repr, unknown))}; "
            f"accepted: num_classes, in_channels, input_scale, {', '.join(accepted)}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise ConfigError(f"model kwargs must be JSON values (they are stored in checkpoints): {exc}") from None
    try:
        model = entry.factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except ValueError as exc:  # factories raise ValueError for a bad option value
        raise ConfigError(f"model {name!r}: {exc}") from None
    if input_scale != 1:
        from pixelwise.models.rescale import InputRescale

        model = InputRescale(model, float(input_scale))
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_info(name: str, num_classes: int = 21, in_channels: int = 3, **kwargs: Any) -> dict[str, Any]:
    """Name, description, accepted kwargs with defaults, small test kwargs and parameter count.

    The model is built on the meta device, so counting parameters allocates no memory.
    """
    entry = get_entry(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    return {
        "name": name,
        "description": entry.description,
        "kwargs": entry.accepted_kwargs(),
        "small_kwargs": dict(entry.small_kwargs),
        "params": count_parameters(model),
        "output_stride": getattr(model, "output_stride", 1),
        "num_classes": num_classes,
    }
