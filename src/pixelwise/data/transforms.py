"""Joint image/mask transforms (albumentations) and the final conversion to tensors.

Why albumentations: it applies one sampled geometric transform to image and mask together,
uses nearest-neighbour for masks by construction (`mask_interpolation`), fills padded mask
areas with a value we choose (ignore_index), and runs on uint8 with OpenCV, which keeps
decoding + augmentation cheap on 2 cores.

Normalisation is done here, after augmentation, not inside albumentations: images stay uint8
through every augmentation (fast), and 16-bit or many-channel inputs are scaled correctly.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from pixelwise.errors import ConfigError


def _pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class SegmentationTransform:
    """Callable (image HxWxC uint8/uint16, mask HxW or HxWxC) -> (float32 (C,H,W), target).

    Targets: an HxW mask becomes int64 (H, W) class ids; an HxWxC mask (multilabel) becomes
    float32 (C, H, W) in {0, 1}, with ignore_index where padding was added.
    """

    def __init__(self, train: bool, crop_size: int | Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 ignore_index: int = 255, *, scale: tuple[float, float] = (0.5, 2.0), hflip: bool = True,
                 vflip: bool = False, rotate: float = 10.0, color_jitter: float = 0.2, blur: float = 0.1,
                 pad_multiple: int | None = None):
        import albumentations as A

        self.train = train
        self.crop = _pair(crop_size)
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        if self.std is not None and (self.std <= 0).any():
            raise ConfigError(f"std must be positive, got {list(std)}")
        self.ignore_index = ignore_index
        pad = dict(border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index)
        geometric: list = []
        if train:
            if scale != (1.0, 1.0):
                geometric.append(A.RandomScale(scale_limit=(scale[0] - 1, scale[1] - 1), interpolation=cv2.INTER_LINEAR,
                                               mask_interpolation=cv2.INTER_NEAREST, p=1.0))
            if rotate:
                geometric.append(A.Affine(rotate=(-rotate, rotate), interpolation=cv2.INTER_LINEAR,
                                          mask_interpolation=cv2.INTER_NEAREST, p=0.3, **pad))
            if self.crop:
                geometric += [A.PadIfNeeded(min_height=self.crop[0], min_width=self.crop[1], p=1.0, **pad),
                              A.RandomCrop(self.crop[0], self.crop[1], p=1.0)]
            if hflip:
                geometric.append(A.HorizontalFlip(p=0.5))
            if vflip:
                geometric.append(A.VerticalFlip(p=0.5))
        if pad_multiple:
            geometric.append(A.PadIfNeeded(min_height=None, min_width=None, pad_height_divisor=pad_multiple,
                                           pad_width_divisor=pad_multiple, position="top_left", p=1.0, **pad))
        self.geometric = A.Compose(geometric) if geometric else None
        # Colour transforms depend on the channel count; built for RGB and for anything else.
        self.color_rgb = self.color_other = None
        if train and (color_jitter or blur):
            blur_t = [A.GaussianBlur(blur_limit=(3, 5), p=blur)] if blur else []
            cj = color_jitter
            self.color_rgb = A.Compose(([A.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=cj / 4, p=0.8)]
                                        if cj else []) + blur_t)
            self.color_other = A.Compose(([A.RandomBrightnessContrast(cj, cj, p=0.8)] if cj else []) + blur_t)

    def set_random_seed(self, seed: int) -> None:
        """Reseed the augmentations (each DataLoader worker gets its own seed, see loader.py)."""
        for i, compose in enumerate((self.geometric, self.color_rgb, self.color_other)):
            if compose is not None:
                compose.set_random_seed((seed + 7919 * i) % 2**32)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        if image.dtype == np.uint16:
            image = image.astype(np.float32) / 65535.0  # albumentations' colour ops want uint8 or float
        if self.geometric is not None:
            out = self.geometric(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        if image.ndim == 2:
            image = image[:, :, None]
        if self.train and self.color_rgb is not None:
            pipeline = self.color_rgb if image.shape[2] == 3 else self.color_other
            if image.shape[2] in (1, 3):
                image = pipeline(image=image)["image"]
                if image.ndim == 2:
                    image = image[:, :, None]
        return self.to_tensor(image), mask_to_tensor(mask)

    def to_tensor(self, image: np.ndarray) -> Tensor:
        """HxWxC uint8/uint16/float -> float32 (C, H, W), scaled to 0..1 then standardised.

        Done in numpy, one fused multiply-add per pixel: small torch ops inside DataLoader
        workers pay thread-pool overhead that dominates at these sizes.
        """
        scale = 255.0 if image.dtype == np.uint8 else (65535.0 if image.dtype == np.uint16 else 1.0)
        c = image.shape[2]
        mul = np.full(c, 1.0 / scale, np.float32)
        add = np.zeros(c, np.float32)
        if self.mean is not None:
            mean, std = _per_channel(self.mean, c, "mean"), _per_channel(self.std, c, "std")
            mul, add = mul / std, -mean / std
        x = image.astype(np.float32)
        x *= mul
        x += add
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (C, H, W)


def _per_channel(values: np.ndarray | None, channels: int, what: str) -> np.ndarray:
    if values is None:
        raise ConfigError(f"mean given without std")
    if values.size == channels:
        return values
    if values.size == 1:
        return np.repeat(values, channels)
    raise ConfigError(f"{what} has {values.size} values but the images have {channels} channels")


def mask_to_tensor(mask: np.ndarray) -> Tensor:
    """HxW class ids -> int64 (H, W); HxWxC multilabel -> float32 (C, H, W)."""
    if mask.ndim == 3:
        return torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 0, 1), dtype=np.float32))
    return torch.from_numpy(mask.astype(np.int64))


def build_transforms(train: bool, crop_size: int | Sequence[int] | None = None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     ignore_index: int = 255, **options) -> SegmentationTransform:
    """Training: random scale (0.5-2x), rotation, pad + crop to `crop_size`, flip, colour
    jitter, blur. Eval: normalise only (optionally `pad_multiple=32`, padding bottom/right).
    Masks always use nearest-neighbour and ignore_index in padded areas."""
    return SegmentationTransform(train, crop_size, mean, std, ignore_index, **options)
