"""ResNet-18/34/50 encoders with torchvision's key names, and dilation for atrous models."""

from __future__ import annotations

import torch
from torch import nn

from pixelwise.models.encoders.base import Encoder


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 conv (ResNet v1.5, as torchvision).
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_SPECS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNetEncoder(Encoder):
    """ResNet features at strides 2 (stem), 4, 8, 16, 32 (layer1..layer4).

    output_stride 16 or 8 replaces the stride of layer4 (and layer3) by dilation, keeping
    the receptive field while holding resolution (DeepLab). `width` scales all channels.
    """

    first_conv = "conv1.weight"

    def __init__(self, depth: str = "resnet34", in_channels: int = 3, output_stride: int = 32, width: int = 64):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"unknown ResNet {depth!r}; choose from {', '.join(RESNET_SPECS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        block, layers = RESNET_SPECS[depth]
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._in, self._dilation = width, 1
        dilate3, dilate4 = output_stride == 8, output_stride in (8, 16)
        self.layer1 = self._make_layer(block, width, layers[0], 1, False)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2, False)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2, dilate3)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2, dilate4)
        e = block.expansion
        self.out_channels = [width, width * e, width * 2 * e, width * 4 * e, width * 8 * e]
        self.strides = [2, 4, 8, 16 if not dilate3 else 8, output_stride]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._in != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._in, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._in, planes, stride, previous, downsample)]
        self._in = planes * block.expansion
        layers += [block(self._in, planes, 1, self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.relu(self.bn1(self.conv1(x)))  # (N, w, H/2, W/2)
        s4 = self.layer1(self.maxpool(s2))  # (N, w*e, H/4, W/4)
        s8 = self.layer2(s4)  # (N, 2w*e, H/8, W/8)
        s16 = self.layer3(s8)  # (N, 4w*e, H/16, W/16) or H/8 when dilated
        s32 = self.layer4(s16)  # (N, 8w*e, H/output_stride, W/output_stride)
        return [s2, s4, s8, s16, s32]
