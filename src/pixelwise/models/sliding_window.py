"""Sliding-window patch classifier: the pre-FCN way to segment (Ciresan et al. 2012 style).

A small CNN labels the centre pixel of a patch_size x patch_size crop; segmentation runs
it once per pixel. Every crop is really cut out (unfold) and classified on its own, so the
cost is the honest per-patch cost that fully convolutional networks removed by sharing
the computation between overlapping windows. The benchmark compares it with an FCN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.layers import SegmentationModel
from pixelwise.models.registry import register_model


class PatchClassifier(nn.Module):
    """(B, C, P, P) crops -> (B, num_classes) logits for each crop's centre pixel."""

    def __init__(self, in_channels: int, num_classes: int, width: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width, 2 * width), nn.ReLU(inplace=True),
                                        nn.Linear(2 * width, num_classes))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(crops))


@dataclass
class SlidingWindowConfig:
    num_classes: int
    in_channels: int = 3
    patch_size: int = 17  # odd, so the patch has a centre pixel
    width: int = 32
    chunk_pixels: int = 4096  # crops classified per step; bounds memory, not the result


class SlidingWindow(SegmentationModel):
    def __init__(self, cfg: SlidingWindowConfig):
        super().__init__()
        if cfg.patch_size % 2 == 0 or cfg.patch_size < 7:
            raise ValueError(f"patch_size must be odd and >= 7, got {cfg.patch_size}")
        self.cfg = cfg
        self.patch = PatchClassifier(cfg.in_channels, cfg.num_classes, cfg.width)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p, half = self.cfg.patch_size, self.cfg.patch_size // 2
        x = F.pad(x, [half, half, half, half], mode="replicate")  # (N, C, H+P-1, W+P-1)
        rows = max(1, self.cfg.chunk_pixels // max(1, n * w))
        out = []
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            band = x[:, :, y0 : y1 + p - 1, :]  # rows y0..y1 plus the window margin
            crops = F.unfold(band, p)  # (N, C*P*P, (y1-y0)*W): one column per pixel
            crops = crops.transpose(1, 2).reshape(-1, c, p, p)  # (N*(y1-y0)*W, C, P, P)
            logits = self.patch(crops)  # (N*(y1-y0)*W, K)
            out.append(logits.reshape(n, y1 - y0, w, -1))
        return torch.cat(out, dim=1).permute(0, 3, 1, 2)  # (N, K, H, W)


@register_model(
    "sliding_window",
    "Patch classifier run on a crop around every pixel (the pre-FCN baseline; slow by design)",
    small_kwargs={"patch_size": 9, "width": 8},
)
def sliding_window(num_classes: int, in_channels: int = 3, patch_size: int = 17, width: int = 32,
                   chunk_pixels: int = 4096) -> SlidingWindow:
    return SlidingWindow(SlidingWindowConfig(num_classes, in_channels, patch_size, width, chunk_pixels))
