"""MobileNetV3-Large encoder with torchvision's key layout (`features.<i>.block.<j>.*`).

Depthwise-separable inverted residuals with squeeze-excitation: few FLOPs per pixel,
which is what a CPU/edge model needs. `dilated=True` holds the last stage at stride 16
(as torchvision's LR-ASPP does) so the head sees more detail.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.encoders.base import Encoder
from pixelwise.models.layers import make_divisible

# in, kernel, expanded, out, squeeze-excite, hardswish, stride  (MobileNetV3-Large, Table 1)
LARGE_CFG = [
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
]


class ConvNormAct(nn.Sequential):
    """conv -> BN -> activation, keys `<i>.0` (conv) and `<i>.1` (BN) as in torchvision."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 dilation: int = 1, act: type[nn.Module] | None = nn.ReLU):
        padding = (kernel - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=0.001, momentum=0.01),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, kernel: int, expanded: int, out_ch: int, se: bool, hswish: bool,
                 stride: int, dilation: int):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(ConvNormAct(in_ch, expanded, 1, act=act))
        stride = 1 if dilation > 1 else stride
        layers.append(ConvNormAct(expanded, expanded, kernel, stride, groups=expanded, dilation=dilation, act=act))
        if se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded // 4, 8)))
        layers.append(ConvNormAct(expanded, out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3Encoder(Encoder):
    """MobileNetV3-Large features at strides 2, 4, 8, 16, 32 (16 when dilated).

    Channels (width_mult 1): 16, 24, 40, 112, 960.
    """

    first_conv = "features.0.0.weight"

    def __init__(self, in_channels: int = 3, width_mult: float = 1.0, dilated: bool = False):
        super().__init__()
        def ch(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        layers: list[nn.Module] = [ConvNormAct(in_channels, ch(16), 3, 2, act=nn.Hardswish)]
        stride, self._taps, self.out_channels, self.strides = 2, [], [], []
        for i, (cin, k, exp, cout, se, hs, s) in enumerate(LARGE_CFG):
            dilation = 2 if dilated and i >= 12 else 1
            if s == 2:
                # The previous layer is the last one at the current stride: tap it.
                self._taps.append(len(layers) - 1)
                self.out_channels.append(ch(cin))
                self.strides.append(stride)
                stride *= 1 if dilation > 1 else 2
            layers.append(InvertedResidual(ch(cin), k, ch(exp), ch(cout), se, hs, s, dilation))
        last = 6 * ch(160)
        layers.append(ConvNormAct(ch(160), last, 1, act=nn.Hardswish))
        self._taps.append(len(layers) - 1)
        self.out_channels.append(last)
        self.strides.append(stride)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                feats.append(x)
        return feats
