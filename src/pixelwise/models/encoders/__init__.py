"""Encoders with one contract: a list of feature maps by stride, `out_channels`, `output_stride`.

`create_encoder(name, in_channels, weights=None, **options)`; `weights` is a local file
(.pth/.pt/.safetensors) in torchvision's or timm's key layout. Nothing is downloaded.
Catalogue weights ("imagenet") are loaded by pixelwise.weights, which sits above this
package: `pixelwise.weights.load_pretrained(model, "imagenet")`.
Optional timm encoders ("timm-<name>") appear only when timm imports.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from pixelwise.errors import ConfigError
from pixelwise.models.encoders.base import Encoder
from pixelwise.models.encoders.mobilenetv3 import MobileNetV3Encoder
from pixelwise.models.encoders.resnet import ResNetEncoder
from pixelwise.models.encoders.vgg import VGGEncoder

try:  # optional: timm is not a dependency
    import timm  # type: ignore[import-not-found]
except ImportError:
    timm = None

_ENCODERS: dict[str, Callable[..., Encoder]] = {
    "vgg16": lambda in_channels, **kw: VGGEncoder(in_channels, batch_norm=False, **kw),
    "vgg16_bn": lambda in_channels, **kw: VGGEncoder(in_channels, batch_norm=True, **kw),
    "resnet18": lambda in_channels, **kw: ResNetEncoder("resnet18", in_channels, **kw),
    "resnet34": lambda in_channels, **kw: ResNetEncoder("resnet34", in_channels, **kw),
    "resnet50": lambda in_channels, **kw: ResNetEncoder("resnet50", in_channels, **kw),
    "mobilenetv3_large": lambda in_channels, **kw: MobileNetV3Encoder(in_channels, **kw),
}


class TimmEncoder(Encoder):
    """Any timm model with `features_only=True`, under the same contract (needs timm)."""

    def __init__(self, name: str, in_channels: int = 3, output_stride: int = 32):
        super().__init__()
        kwargs: dict[str, Any] = {"features_only": True, "pretrained": False, "in_chans": in_channels}
        if output_stride != 32:
            kwargs["output_stride"] = output_stride
        self.model = timm.create_model(name, **kwargs)
        info = self.model.feature_info
        self.out_channels = list(info.channels())
        self.strides = list(info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def list_encoders() -> list[str]:
    names = sorted(_ENCODERS)
    if timm is not None:
        names.append("timm-<any timm model name>")
    return names


def register_encoder(name: str, factory: Callable[..., Encoder]) -> None:
    if name in _ENCODERS:
        raise ConfigError(f"encoder {name!r} is already registered")
    _ENCODERS[name] = factory


def create_encoder(name: str, in_channels: int = 3, weights: str | None = None, **options: Any) -> Encoder:
    """Build encoder `name`; load `weights` (a local file path) when given."""
    if name.startswith("timm-"):
        if timm is None:
            raise ConfigError(f"encoder {name!r} needs the optional package timm, which is not installed")
        encoder: Encoder = TimmEncoder(name[len("timm-"):], in_channels, **options)
    elif name in _ENCODERS:
        try:
            encoder = _ENCODERS[name](in_channels, **options)
        except TypeError as exc:
            raise ConfigError(f"encoder {name!r}: {exc}") from None
    else:
        raise ConfigError(f"unknown encoder {name!r}; available: {', '.join(list_encoders())}")
    encoder.encoder_name = name  # lets pixelwise.weights find the encoder a catalogue entry is for
    if weights:
        from pixelwise.models.pretrained import load_encoder_weights

        load_encoder_weights(encoder, weights)
    return encoder


__all__ = ["Encoder", "TimmEncoder", "create_encoder", "list_encoders", "register_encoder",
           "VGGEncoder", "ResNetEncoder", "MobileNetV3Encoder"]
