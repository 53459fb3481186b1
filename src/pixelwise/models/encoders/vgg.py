"""VGG16 and VGG16-BN encoders, laid out like torchvision (`features.<i>.*`) so weights load as is."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.encoders.base import Encoder

# Channels per conv; "M" is a 2x2 max-pool that ends a stage (the FCN paper's pool1..pool5).
VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGGEncoder(Encoder):
    """VGG16 features; feature i is the output of pool(i+1): strides 2, 4, 8, 16, 32.

    `width` scales the channels (64 is the real VGG16; smaller is for tests and tiny runs).
    """

    first_conv = "features.0.weight"

    def __init__(self, in_channels: int = 3, batch_norm: bool = False, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        self.out_channels = []
        for item in VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                self.out_channels.append(channels)
                continue
            out = int(item) * width // 64
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.strides = [2, 4, 8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                feats.append(x)  # (N, out_channels[i], H / 2^(i+1), W / 2^(i+1))
        return feats

    def forward_with_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[list[int]]]:
        """For SegNet: deepest features, plus each pool's argmax indices and input size."""
        indices, sizes = [], []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                sizes.append([x.shape[-2], x.shape[-1]])
                x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
                indices.append(idx)
            else:
                x = layer(x)
        return x, indices, sizes
