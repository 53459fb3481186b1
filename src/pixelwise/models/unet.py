"""U-Net (Ronneberger, Fischer, Brox 2015) and a U-Net decoder on a ResNet encoder.

Contracting path of double 3x3 convs and 2x2 max-pools (64 -> 1024 channels at depth 4),
expanding path that upsamples, concatenates the same-resolution encoder features (the
skip connections) and applies a double conv. 'same' padding, so the output matches the
input (the paper used valid convs and cropped). Depth, width (base_channels), BatchNorm
and the upsampling method are options; base_channels=16 gives a small, fast model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.encoders import create_encoder
from pixelwise.models.layers import UPSAMPLE_MODES, DoubleConv, SegmentationModel, Upsample
from pixelwise.models.registry import register_model


@dataclass
class UNetConfig:
    num_classes: int
    in_channels: int = 3
    base_channels: int = 64
    depth: int = 4  # number of 2x downsamplings; output_stride = 2**depth
    batch_norm: bool = True  # False gives the paper's original (no normalisation)
    upsample: str = "transposed"  # one of layers.UPSAMPLE_MODES


class UpBlock(nn.Module):
    """Upsample (N, in, h, w) -> (N, out, 2h, 2w), concatenate the skip, double conv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, mode: str, batch_norm: bool):
        super().__init__()
        self.up = Upsample(in_ch, out_ch, 2, mode)
        self.conv = DoubleConv(out_ch + skip_ch, out_ch, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x, indices, [skip.shape[-2], skip.shape[-1]])
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(SegmentationModel):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        if cfg.depth < 1:
            raise ValueError(f"depth must be >= 1, got {cfg.depth}")
        if cfg.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample {cfg.upsample!r}; choose from {', '.join(UPSAMPLE_MODES)}")
        self.cfg = cfg
        self.output_stride = 2 ** cfg.depth
        chs = [cfg.base_channels * 2 ** i for i in range(cfg.depth + 1)]  # 64, 128, ..., 1024
        self.inc = DoubleConv(cfg.in_channels, chs[0], cfg.batch_norm)
        self.down = nn.ModuleList([DoubleConv(chs[i], chs[i + 1], cfg.batch_norm) for i in range(cfg.depth)])
        self.up = nn.ModuleList(
            [UpBlock(chs[i + 1], chs[i], chs[i], cfg.upsample, cfg.batch_norm) for i in reversed(range(cfg.depth))]
        )
        self.head = nn.Conv2d(chs[0], cfg.num_classes, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        keep_indices = self.cfg.upsample == "maxunpool"
        x = self.inc(x)  # (N, c, H, W)
        skips, indices = [], []
        for block in self.down:
            skips.append(x)
            if keep_indices:
                x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
                indices.append(idx)
            else:
                x = F.max_pool2d(x, 2, 2)
            x = block(x)  # (N, c*2^(i+1), H/2^(i+1), W/2^(i+1))
        for i, block in enumerate(self.up):
            idx = indices[-1 - i] if keep_indices else None
            x = block(x, skips[-1 - i], idx)  # back up one level
        return self.head(x)  # (N, K, H, W)


@register_model(
    "unet",
    "U-Net: double-conv encoder/decoder with skip concatenation (base_channels, depth, batch_norm, upsample)",
    small_kwargs={"base_channels": 8, "depth": 3},
)
def unet(num_classes: int, in_channels: int = 3, base_channels: int = 64, depth: int = 4, batch_norm: bool = True,
         upsample: str = "transposed") -> UNet:
    return UNet(UNetConfig(num_classes, in_channels, base_channels, depth, batch_norm, upsample))


class ResNetUNet(SegmentationModel):
    """U-Net decoder over a ResNet encoder: skips from strides 16, 8, 4, 2; a last block to stride 1."""

    output_stride = 32

    def __init__(self, num_classes: int, in_channels: int, encoder: str, encoder_weights: str | None,
                 decoder_channels: list[int], upsample: str, width: int):
        super().__init__()
        if not encoder.startswith("resnet"):
            raise ValueError(f"unet_resnet needs a ResNet encoder (resnet18, resnet34, resnet50), got {encoder!r}")
        if len(decoder_channels) != 5:
            raise ValueError(f"decoder_channels needs 5 values (strides 16, 8, 4, 2, 1), got {decoder_channels}")
        if upsample == "maxunpool":
            raise ValueError("unet_resnet has no stored pooling indices; use transposed, bilinear, nearest or pixelshuffle")
        self.encoder = create_encoder(encoder, in_channels, encoder_weights, width=width)
        skips = self.encoder.out_channels[:4][::-1] + [0]  # strides 16, 8, 4, 2, then none
        blocks, ch = [], self.encoder.out_channels[-1]
        for skip_ch, out_ch in zip(skips, decoder_channels):
            blocks.append(UpBlock(ch, skip_ch, out_ch, upsample, True))
            ch = out_ch
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(ch, num_classes, 3, padding=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)  # strides 2, 4, 8, 16, 32
        y = feats[-1]  # (N, C32, H/32, W/32)
        for i, block in enumerate(self.decoder[:4]):
            y = block(y, feats[3 - i])  # up to stride 16, 8, 4, 2
        y = self.decoder[4](y, x[:, :0])  # to stride 1, no skip (empty channel slice)
        return self.head(y)  # (N, K, H, W)


@register_model(
    "unet_resnet",
    "U-Net decoder on a ResNet-18/34/50 encoder (encoder, encoder_weights, decoder_channels)",
    small_kwargs={"encoder": "resnet18", "width": 8, "decoder_channels": [32, 16, 16, 8, 8]},
)
def unet_resnet(num_classes: int, in_channels: int = 3, encoder: str = "resnet34", encoder_weights: str | None = None,
                decoder_channels: list[int] | None = None, upsample: str = "transposed", width: int = 64) -> ResNetUNet:
    decoder_channels = list(decoder_channels or [256, 128, 64, 32, 16])
    return ResNetUNet(num_classes, in_channels, encoder, encoder_weights, decoder_channels, upsample, width)
