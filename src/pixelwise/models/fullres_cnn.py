"""Full-resolution CNN: 3x3 convolutions that never downsample.

The simplest dense predictor: every layer sees the full H x W, so it needs no upsampling,
but its receptive field grows only 2 pixels per layer (dilation helps) and its cost per
layer is the full image. It shows why encoders downsample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pixelwise.models.layers import ConvBNReLU, SegmentationModel
from pixelwise.models.registry import register_model


@dataclass
class FullResConfig:
    num_classes: int
    in_channels: int = 3
    depth: int = 8
    width: int = 64
    dilated: bool = True  # dilations 1, 1, 2, 4, 8, ... widen the receptive field for free


class FullResCNN(SegmentationModel):
    def __init__(self, cfg: FullResConfig):
        super().__init__()
        if cfg.depth < 1:
            raise ValueError(f"depth must be >= 1, got {cfg.depth}")
        layers, ch = [], cfg.in_channels
        for i in range(cfg.depth):
            dilation = min(2 ** max(0, i - 1), 16) if cfg.dilated else 1
            layers.append(ConvBNReLU(ch, cfg.width, dilation=dilation))
            ch = cfg.width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cfg.width, cfg.num_classes, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (N, K, H, W) all the way


@register_model(
    "fullres_cnn",
    "Stack of 3x3 conv-BN-ReLU at full resolution (optionally dilated), no downsampling",
    small_kwargs={"depth": 3, "width": 8},
)
def fullres_cnn(num_classes: int, in_channels: int = 3, depth: int = 8, width: int = 64,
                dilated: bool = True) -> FullResCNN:
    return FullResCNN(FullResConfig(num_classes, in_channels, depth, width, dilated))
