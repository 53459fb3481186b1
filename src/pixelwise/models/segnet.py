"""SegNet (Badrinarayanan, Kendall, Cipolla 2017): the decoder upsamples by max-unpooling.

Each encoder max-pool stores the argmax index of every window; the mirrored decoder puts
values back at those positions (sparse maps) and densifies them with convolutions. No
learned upsampling and no copied feature maps, only the indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.encoders import create_encoder
from pixelwise.models.layers import ConvBNReLU, SegmentationModel
from pixelwise.models.registry import register_model

# Decoder convs per stage, deepest first, mirroring VGG16 (channels at width 64).
_DECODER = [[512, 512, 512], [512, 512, 256], [256, 256, 128], [128, 64], [64]]


@dataclass
class SegNetConfig:
    num_classes: int
    in_channels: int = 3
    encoder_weights: str | None = None
    width: int = 64


class SegNet(SegmentationModel):
    """VGG16-BN encoder (13 convs), mirrored decoder with max-unpooling, 3x3 classifier."""

    output_stride = 32

    def __init__(self, cfg: SegNetConfig):
        super().__init__()
        self.encoder = create_encoder("vgg16_bn", cfg.in_channels, cfg.encoder_weights, width=cfg.width)
        ch = self.encoder.out_channels[-1]
        stages = []
        for convs in _DECODER:
            layers = []
            for c in convs:
                c = c * cfg.width // 64
                layers.append(ConvBNReLU(ch, c))
                ch = c
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.classifier = nn.Conv2d(ch, cfg.num_classes, 3, padding=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x, indices, sizes = self.encoder.forward_with_indices(x)  # x: (N, 8w, H/32, W/32)
        for stage, idx, size in zip(self.decoder, reversed(indices), reversed(sizes)):
            x = F.max_unpool2d(x, idx, 2, 2, output_size=size)  # sparse, 2x larger
            x = stage(x)
        return self.classifier(x)  # (N, K, H, W)


class SegNetBasic(SegmentationModel):
    """The paper's small variant: 4 levels of 7x7 conv (64 channels) + BN + ReLU + pool;
    decoder of unpool + 7x7 conv + BN (no ReLU, as in the paper); 1x1 classifier."""

    output_stride = 16

    def __init__(self, num_classes: int, in_channels: int = 3, channels: int = 64, depth: int = 4,
                 kernel_size: int = 7):
        super().__init__()
        self.output_stride = 2 ** depth
        self.enc = nn.ModuleList(
            [ConvBNReLU(in_channels if i == 0 else channels, channels, kernel_size) for i in range(depth)]
        )
        self.dec = nn.ModuleList([ConvBNReLU(channels, channels, kernel_size, relu=False) for _ in range(depth)])
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        for conv in self.enc:
            x = conv(x)
            sizes.append([x.shape[-2], x.shape[-1]])
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
            indices.append(idx)
        for conv, idx, size in zip(self.dec, reversed(indices), reversed(sizes)):
            x = conv(F.max_unpool2d(x, idx, 2, 2, output_size=size))
        return self.classifier(x)  # (N, K, H, W)


@register_model("segnet", "SegNet: VGG16-BN encoder, decoder upsampling by max-unpooling with stored indices",
                small_kwargs={"width": 8})
def segnet(num_classes: int, in_channels: int = 3, encoder_weights: str | None = None, width: int = 64) -> SegNet:
    return SegNet(SegNetConfig(num_classes, in_channels, encoder_weights, width))


@register_model("segnet_basic", "SegNet-Basic: 4 levels of 7x7 conv, 64 channels, max-unpooling decoder",
                small_kwargs={"channels": 8, "depth": 3})
def segnet_basic(num_classes: int, in_channels: int = 3, channels: int = 64, depth: int = 4,
                 kernel_size: int = 7) -> SegNetBasic:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return SegNetBasic(num_classes, in_channels, channels, depth, kernel_size)
