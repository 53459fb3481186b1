"""LR-ASPP on MobileNetV3-Large (Howard et al. 2019): the fast CPU / edge model.

The head is tiny: one 1x1 conv on the stride-16 features, gated per channel by a
global-pooling branch (sigmoid attention, not an output activation), upsampled to
stride 8 and summed with a 1x1 classifier on the stride-8 features. Most compute is
in the depthwise-separable encoder, a few GFLOPs per 512x512 image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.encoders import create_encoder
from pixelwise.models.layers import SegmentationModel, resize_to
from pixelwise.models.registry import register_model


@dataclass
class LRASPPConfig:
    num_classes: int
    in_channels: int = 3
    encoder_weights: str | None = None
    width_mult: float = 1.0
    head_channels: int = 128


class LRASPP(SegmentationModel):
    output_stride = 16

    def __init__(self, cfg: LRASPPConfig):
        super().__init__()
        self.encoder = create_encoder("mobilenetv3_large", cfg.in_channels, cfg.encoder_weights,
                                      width_mult=cfg.width_mult, dilated=True)
        low_ch, high_ch = self.encoder.out_channels[2], self.encoder.out_channels[-1]
        self.cbr = nn.Sequential(nn.Conv2d(high_ch, cfg.head_channels, 1, bias=False),
                                 nn.BatchNorm2d(cfg.head_channels), nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_ch, cfg.head_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_ch, cfg.num_classes, 1)
        self.high_classifier = nn.Conv2d(cfg.head_channels, cfg.num_classes, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        low, high = feats[2], feats[-1]  # (N, 40, H/8, W/8), (N, 960, H/16, W/16)
        y = self.cbr(high) * self.scale(high)  # (N, 128, H/16, W/16)
        y = resize_to(y, [low.shape[-2], low.shape[-1]])  # (N, 128, H/8, W/8)
        y = self.low_classifier(low) + self.high_classifier(y)  # (N, K, H/8, W/8)
        return F.interpolate(y, size=[x.shape[-2], x.shape[-1]], mode="bilinear", align_corners=False)


@register_model(
    "lraspp_mobilenetv3",
    "LR-ASPP on MobileNetV3-Large: few GFLOPs, the fast CPU/edge model (width_mult, head_channels)",
    small_kwargs={"width_mult": 0.25, "head_channels": 16},
)
def lraspp_mobilenetv3(num_classes: int, in_channels: int = 3, encoder_weights: str | None = None,
                       width_mult: float = 1.0, head_channels: int = 128) -> LRASPP:
    return LRASPP(LRASPPConfig(num_classes, in_channels, encoder_weights, width_mult, head_channels))
