"""The one encoder contract every architecture builds on (as in segmentation_models.pytorch)."""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """A backbone that returns feature maps by stride.

    forward(x: (N, in_channels, H, W)) -> list of 5 tensors, feature i of shape
    (N, out_channels[i], H / strides[i], W / strides[i]); strides are (2, 4, 8, 16, 32)
    unless dilation holds the resolution (e.g. (2, 4, 8, 16, 16) at output_stride 16).
    `first_conv` names the weight the pretrained loader adapts to other in_channels.
    """

    out_channels: list[int]
    strides: list[int]
    first_conv: str = ""

    @property
    def output_stride(self) -> int:
        return self.strides[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
