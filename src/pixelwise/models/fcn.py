"""FCN-32s / 16s / 8s (Long, Shelhamer, Darrell 2015).

VGG16 (or a ResNet) encoder; fc6/fc7 become 7x7 and 1x1 convolutions; class scores are
upsampled by transposed convolutions initialised to bilinear. FCN-16s adds the scores of
pool4 (stride 16), FCN-8s also those of pool3 (stride 8), summed as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pixelwise.models.encoders import create_encoder
from pixelwise.models.layers import SegmentationModel, transposed_upsampler
from pixelwise.models.registry import register_model


@dataclass
class FCNConfig:
    num_classes: int
    in_channels: int = 3
    variant: int = 8  # 32, 16 or 8: the finest stride whose scores are fused
    encoder: str = "vgg16"
    encoder_weights: str | None = None
    width: int = 64  # encoder width (64 = the real VGG16 / ResNet)
    fc_channels: int = 4096
    dropout: float = 0.5


class FCN(SegmentationModel):
    output_stride = 32

    def __init__(self, cfg: FCNConfig):
        super().__init__()
        if cfg.variant not in (32, 16, 8):
            raise ValueError(f"FCN variant must be 32, 16 or 8, got {cfg.variant}")
        self.variant = cfg.variant
        self.encoder = create_encoder(cfg.encoder, cfg.in_channels, cfg.encoder_weights, width=cfg.width)
        c8, c16, c32 = self.encoder.out_channels[2:]
        k = cfg.num_classes
        fc_kernel = 7 if cfg.encoder.startswith("vgg") else 3
        self.head = nn.Sequential(  # fc6, fc7 as convolutions
            nn.Conv2d(c32, cfg.fc_channels, fc_kernel, padding=fc_kernel // 2), nn.ReLU(inplace=True),
            nn.Dropout2d(cfg.dropout),
            nn.Conv2d(cfg.fc_channels, cfg.fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(cfg.dropout),
        )
        self.score32 = nn.Conv2d(cfg.fc_channels, k, 1)
        if cfg.variant == 32:
            self.up_final = transposed_upsampler(k, k, 32, bilinear_init=True)
        else:
            self.score16 = nn.Conv2d(c16, k, 1)
            self.up32to16 = transposed_upsampler(k, k, 2, bilinear_init=True)
            # The paper zero-initialises the skip scorers so training starts from FCN-32s.
            nn.init.zeros_(self.score16.weight), nn.init.zeros_(self.score16.bias)
            if cfg.variant == 16:
                self.up_final = transposed_upsampler(k, k, 16, bilinear_init=True)
            else:
                self.score8 = nn.Conv2d(c8, k, 1)
                nn.init.zeros_(self.score8.weight), nn.init.zeros_(self.score8.bias)
                self.up16to8 = transposed_upsampler(k, k, 2, bilinear_init=True)
                self.up_final = transposed_upsampler(k, k, 8, bilinear_init=True)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        f8, f16, f32 = self.encoder(x)[2:]  # pool3 (H/8), pool4 (H/16), pool5 (H/32)
        score = self.score32(self.head(f32))  # (N, K, H/32, W/32)
        if self.variant == 32:
            return self.up_final(score)  # (N, K, H, W)
        score = self.up32to16(score) + self.score16(f16)  # (N, K, H/16, W/16)
        if self.variant == 16:
            return self.up_final(score)
        score = self.up16to8(score) + self.score8(f8)  # (N, K, H/8, W/8)
        return self.up_final(score)  # (N, K, H, W)


_SMALL = {"width": 8, "fc_channels": 32}
_FCN_ARGS = "encoder: vgg16 | vgg16_bn | resnet18 | resnet34 | resnet50"


def _fcn(variant: int, num_classes: int, in_channels: int, **kw) -> FCN:
    return FCN(FCNConfig(num_classes, in_channels, variant, **kw))


@register_model("fcn32s", f"FCN-32s: VGG16 encoder, one 32x transposed-conv upsampling ({_FCN_ARGS})", _SMALL)
def fcn32s(num_classes: int, in_channels: int = 3, encoder: str = "vgg16", encoder_weights: str | None = None,
           width: int = 64, fc_channels: int = 4096, dropout: float = 0.5) -> FCN:
    return _fcn(32, num_classes, in_channels, encoder=encoder, encoder_weights=encoder_weights, width=width,
                fc_channels=fc_channels, dropout=dropout)


@register_model("fcn16s", f"FCN-16s: FCN-32s plus pool4 scores summed at stride 16 ({_FCN_ARGS})", _SMALL)
def fcn16s(num_classes: int, in_channels: int = 3, encoder: str = "vgg16", encoder_weights: str | None = None,
           width: int = 64, fc_channels: int = 4096, dropout: float = 0.5) -> FCN:
    return _fcn(16, num_classes, in_channels, encoder=encoder, encoder_weights=encoder_weights, width=width,
                fc_channels=fc_channels, dropout=dropout)


@register_model("fcn8s", f"FCN-8s: FCN-16s plus pool3 scores summed at stride 8 ({_FCN_ARGS})", _SMALL)
def fcn8s(num_classes: int, in_channels: int = 3, encoder: str = "vgg16", encoder_weights: str | None = None,
          width: int = 64, fc_channels: int = 4096, dropout: float = 0.5) -> FCN:
    return _fcn(8, num_classes, in_channels, encoder=encoder, encoder_weights=encoder_weights, width=width,
                fc_channels=fc_channels, dropout=dropout)
