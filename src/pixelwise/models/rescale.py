"""`InputRescale`: run any model on a resized copy of the input, answer at the input's size.

Labels are scored at the size they come in (CamVid at 480x360), but a network does not
have to see every pixel to label them: at `input_scale=0.5` it sees a quarter of the
pixels, so it trains about 3x faster on a CPU, and its logits are resized back with
bilinear interpolation before any loss or metric sees them. That trade (more epochs in a
fixed time, coarser boundaries) is the one real-time networks make with a stride-2 stem;
here it is one option for every registered model, `create_model(..., input_scale=0.5)`.

Down-scaling by exactly 1/2 with bilinear interpolation (align_corners=False) samples
midway between pixel pairs, so it averages each 2x2 block: no aliasing, and it exports
to ONNX as a plain Resize.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InputRescale(nn.Module):
    """(N, C, H, W) -> net(resized input) -> logits resized back to (H, W)."""

    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"input_scale must be in (0, 1], got {scale!r}")
        self.net = net
        self.scale = float(scale)
        # The wrapper's logits align with the input only at multiples of this stride.
        self.output_stride = int(round(getattr(net, "output_stride", 1) / self.scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        small = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)
        logits = self.net(small)
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
