"""DeepLabV3+ (Chen et al. 2018): atrous ResNet encoder, ASPP, and a light decoder.

The encoder keeps stride 16 (or 8) by dilating its last stage(s). ASPP looks at several
context sizes at once (atrous rates 6/12/18 at stride 16, doubled at stride 8, plus image
pooling); the decoder fuses it with stride-4 features for sharper boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.encoders import create_encoder
from pixelwise.models.layers import ConvBNReLU, SegmentationModel, resize_to
from pixelwise.models.registry import register_model


class ASPP(nn.Module):
    """(N, in, h, w) -> (N, out, h, w): 1x1 branch, three atrous 3x3 branches, image pooling."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, int, int]):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_ch, out_ch, 1)] + [ConvBNReLU(in_ch, out_ch, 3, dilation=r) for r in rates]
        )
        # No BatchNorm on the 1x1 pooled map: with batch size 1 it has a single value per channel.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(ConvBNReLU(5 * out_ch, out_ch, 1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = [x.shape[-2], x.shape[-1]]
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, size[0], size[1]))  # broadcast the image-level feature
        return self.project(torch.cat(outs, dim=1))


@dataclass
class DeepLabConfig:
    num_classes: int
    in_channels: int = 3
    encoder: str = "resnet50"
    encoder_weights: str | None = None
    output_stride: int = 16
    aspp_channels: int = 256
    low_level_channels: int = 48
    width: int = 64


class DeepLabV3Plus(SegmentationModel):
    def __init__(self, cfg: DeepLabConfig):
        super().__init__()
        if cfg.output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {cfg.output_stride}")
        if not cfg.encoder.startswith("resnet"):
            raise ValueError(f"deeplabv3plus needs a ResNet encoder (atrous), got {cfg.encoder!r}")
        self.output_stride = cfg.output_stride
        self.encoder = create_encoder(cfg.encoder, cfg.in_channels, cfg.encoder_weights,
                                      output_stride=cfg.output_stride, width=cfg.width)
        rates = (6, 12, 18) if cfg.output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(self.encoder.out_channels[-1], cfg.aspp_channels, rates)
        self.low = ConvBNReLU(self.encoder.out_channels[1], cfg.low_level_channels, 1)
        self.decoder = nn.Sequential(
            ConvBNReLU(cfg.aspp_channels + cfg.low_level_channels, cfg.aspp_channels),
            ConvBNReLU(cfg.aspp_channels, cfg.aspp_channels),
        )
        self.classifier = nn.Conv2d(cfg.aspp_channels, cfg.num_classes, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        low = self.low(feats[1])  # (N, 48, H/4, W/4)
        high = self.aspp(feats[-1])  # (N, 256, H/os, W/os)
        high = resize_to(high, [low.shape[-2], low.shape[-1]])  # (N, 256, H/4, W/4)
        y = self.classifier(self.decoder(torch.cat([high, low], dim=1)))  # (N, K, H/4, W/4)
        return F.interpolate(y, size=[x.shape[-2], x.shape[-1]], mode="bilinear", align_corners=False)


@register_model(
    "deeplabv3plus",
    "DeepLabV3+: atrous ResNet encoder (output_stride 8 or 16), ASPP, stride-4 decoder",
    small_kwargs={"encoder": "resnet18", "width": 8, "aspp_channels": 16, "low_level_channels": 8},
)
def deeplabv3plus(num_classes: int, in_channels: int = 3, encoder: str = "resnet50",
                  encoder_weights: str | None = None, output_stride: int = 16, aspp_channels: int = 256,
                  low_level_channels: int = 48, width: int = 64) -> DeepLabV3Plus:
    return DeepLabV3Plus(DeepLabConfig(num_classes, in_channels, encoder, encoder_weights, output_stride,
                                       aspp_channels, low_level_channels, width))
