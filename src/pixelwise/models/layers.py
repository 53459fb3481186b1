"""Shared building blocks: conv-BN-ReLU, padding to the output stride, upsampling choices.

Blocks stick to Conv2d, BatchNorm2d and ReLU where they can: oneDNN fuses these and keeps
them in bf16 + channels_last on CPU, which is where most of the speed comes from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLE_MODES = ("transposed", "bilinear", "nearest", "pixelshuffle", "maxunpool")


class ConvBNReLU(nn.Sequential):
    """3x3 (or k x k) 'same' convolution, optional BatchNorm, ReLU. Keeps H, W (stride 1)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1,
                 batch_norm: bool = True, stride: int = 1, relu: bool = True):
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      bias=not batch_norm)
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvBNReLU, the U-Net unit: (N, in, H, W) -> (N, out, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool = True):
        super().__init__(ConvBNReLU(in_ch, out_ch, batch_norm=batch_norm),
                         ConvBNReLU(out_ch, out_ch, batch_norm=batch_norm))


def bilinear_kernel(channels_in: int, channels_out: int, kernel_size: int) -> torch.Tensor:
    """Weights that make a transposed conv start as bilinear upsampling (FCN paper init)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    kernel = filt[:, None] * filt[None, :]
    weight = torch.zeros(channels_in, channels_out, kernel_size, kernel_size)
    for i in range(min(channels_in, channels_out)):
        weight[i, i] = kernel
    return weight


def transposed_upsampler(in_ch: int, out_ch: int, scale: int, bilinear_init: bool = False) -> nn.ConvTranspose2d:
    """Transposed conv that multiplies H, W by exactly `scale`.

    kernel = 2*scale (divisible by the stride, so every output pixel gets the same number
    of kernel taps: no checkerboard artefacts); scale 2 uses kernel 2 as the U-Net paper does.
    """
    kernel = 2 if scale == 2 else 2 * scale
    padding = 0 if scale == 2 else scale // 2
    layer = nn.ConvTranspose2d(in_ch, out_ch, kernel, stride=scale, padding=padding, bias=False)
    if bilinear_init and not layer.weight.is_meta:
        with torch.no_grad():
            layer.weight.copy_(bilinear_kernel(in_ch, out_ch, kernel))
    return layer


class Upsample(nn.Module):
    """Upsample by `scale` and map in_ch -> out_ch, by one of UPSAMPLE_MODES.

    transposed: learned transposed conv; bilinear / nearest: interpolate then 3x3 conv;
    pixelshuffle: 3x3 conv to out*scale^2 channels then PixelShuffle; maxunpool: 1x1 conv
    then MaxUnpool2d with the indices the encoder's pooling stored (passed to forward).
    """

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2, mode: str = "transposed"):
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsampling {mode!r}; choose from {', '.join(UPSAMPLE_MODES)}")
        self.mode, self.scale = mode, scale
        if mode == "transposed":
            self.op = transposed_upsampler(in_ch, out_ch, scale)
        elif mode in ("bilinear", "nearest"):
            self.op = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        elif mode == "pixelshuffle":
            self.op = nn.Sequential(nn.Conv2d(in_ch, out_ch * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        else:
            if scale != 2:
                raise ValueError("maxunpool upsampling works with scale 2 only")
            self.op = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None,
                size: list[int] | None = None) -> torch.Tensor:
        if self.mode == "transposed" or self.mode == "pixelshuffle":
            return self.op(x)
        if self.mode == "maxunpool":
            if indices is None:
                raise ValueError("maxunpool upsampling needs the pooling indices")
            return F.max_unpool2d(self.op(x), indices, 2, 2, output_size=size)
        if self.mode == "bilinear":
            x = F.interpolate(x, scale_factor=float(self.scale), mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, scale_factor=float(self.scale), mode="nearest")
        return self.op(x)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad H and W on the bottom/right up to a multiple of `multiple`."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, [0, pad_w, 0, pad_h])


def resize_to(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Bilinear resize of logits or features to `size` (H, W)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SegmentationModel(nn.Module):
    """Base class: pads the input to `output_stride`, runs `forward_padded`, crops back.

    Subclasses implement `forward_padded(x) -> logits` for inputs whose H, W are multiples
    of `output_stride`, so every model meets the contract: (N, C, H, W) in, logits
    (N, num_classes, H, W) out, for any H, W.
    """

    output_stride: int = 1

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        logits = self.forward_padded(pad_to_multiple(x, self.output_stride))
        return logits[:, :, :h, :w]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts to a multiple of `divisor` (never more than 10 % down)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new

