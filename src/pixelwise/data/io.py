"""Reading images and masks from disk: one place where decoder errors become `DataError`.

Images come back as `HxWxC` arrays (C=1 for grayscale) in their stored dtype (uint8 or
uint16), so the loader stays cheap: conversion to float happens once, at the very end of the
transform. Masks are read by `pixelwise.data.masks` with the same decoders, and
`pixelwise.data.classes.MaskDecoder` turns them into class ids.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pixelwise.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ARRAY_EXTS = (".npy",)
MASK_EXTS = IMAGE_EXTS + ARRAY_EXTS

_ORIENTATION_TAG = 0x0112
_noted_alpha: set[str] = set()


def is_image_name(name: str, exts: tuple[str, ...] = IMAGE_EXTS) -> bool:
    return name.lower().endswith(exts) and not name.startswith(".")


def open_pil(path: Path) -> Image.Image:
    """Open and fully decode with Pillow, applying EXIF orientation; DataError on any failure."""
    try:
        if path.stat().st_size == 0:
            raise DataError(path, "file is empty (0 bytes)")
        img = Image.open(path)
        img.load()  # decode now so a truncated file fails here, not later in a worker
        if img.getexif().get(_ORIENTATION_TAG, 1) != 1:
            img = ImageOps.exif_transpose(img)
        return img
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(path, "cannot read as an image (unknown format or not an image file)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        problem = "truncated or corrupt image" if "truncated" in str(exc) or "broken" in str(exc) else str(exc)
        raise DataError(path, f"cannot read image: {problem}") from None


def read_array(path: Path) -> np.ndarray:
    """A .npy or multi-page/multi-channel .tif array, as stored."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        import tifffile

        return tifffile.imread(path)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"cannot read array file: {exc}") from None
    except Exception as exc:  # tifffile raises its own error types for corrupt files
        raise DataError(path, f"cannot read array file: {type(exc).__name__}: {exc}") from None


_STRIP_PIXELS = 1 << 22


def _writable_array(img: Image.Image) -> np.ndarray:
    """`np.array(img)`, copied in row strips for large images.

    np.array goes through a bytes object of the whole image, so an 8192x8192 RGB photo would
    hold Pillow's pixels (256 MiB), those bytes (192 MiB) and the array (192 MiB) at once.
    """
    if img.width * img.height <= _STRIP_PIXELS:
        return np.array(img)
    rows = max(1, _STRIP_PIXELS // img.width)
    first = np.asarray(img.crop((0, 0, img.width, min(rows, img.height))))
    arr = np.empty((img.height, *first.shape[1:]), dtype=first.dtype)
    arr[:len(first)] = first
    for top in range(len(first), img.height, rows):
        arr[top:top + rows] = np.asarray(img.crop((0, top, img.width, min(img.height, top + rows))))
    return arr


def _pil_to_image_array(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA"):
        if str(path) not in _noted_alpha:
            _noted_alpha.add(str(path))
            warnings.warn(f"{path}: alpha channel dropped (the model reads colour only)", stacklevel=3)
        img = img.convert("RGB" if mode == "RGBA" else "L")
    elif mode in ("CMYK", "YCbCr", "HSV", "LAB"):
        img = img.convert("RGB")
    elif mode == "1":
        img = img.convert("L")
    arr = _writable_array(img)  # a writable copy: torch.from_numpy refuses read-only buffers quietly
    if img.mode in ("I;16", "I;16B", "I;16L"):
        arr = arr.astype(np.uint16, copy=False)
    elif img.mode == "I":
        if arr.min() < 0 or arr.max() > 65535:
            raise DataError(path, "32-bit integer image with values outside 0..65535 is not supported")
        arr = arr.astype(np.uint16)
    elif img.mode == "F":
        raise DataError(path, "floating-point images are not supported; save as 8- or 16-bit")
    return arr


def read_image(path: str | Path) -> np.ndarray:
    """Read an input image as `HxWxC` uint8/uint16 (C=1 grayscale, 3 RGB, any C for .tif/.npy).

    EXIF orientation is applied; an alpha channel is dropped with a warning.
    Raises `DataError` naming the file for anything unreadable.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npy",) or (suffix in (".tif", ".tiff") and is_multichannel_tiff(path)):
        arr = read_array(path)
        if arr.ndim == 3 and arr.shape[0] < arr.shape[-1] and arr.shape[0] <= 16:
            arr = np.moveaxis(arr, 0, -1)  # stored channels-first
    else:
        arr = _pil_to_image_array(open_pil(path), path)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise DataError(path, f"expected a 2-D or 3-D image array, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        elif np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)
        else:
            raise DataError(path, f"image dtype {arr.dtype} is not supported (use uint8 or uint16)")
    return np.ascontiguousarray(arr)


def is_multichannel_tiff(path: Path) -> bool:
    """Pillow reads ordinary 1/3-channel TIFFs; anything else goes through tifffile."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            samples = getattr(page, "samplesperpixel", 1)
            return len(tif.pages) > 1 or samples not in (1, 3, 4)
    except Exception:
        return False  # let Pillow produce the error message


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header only, without decoding pixels."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(_ORIENTATION_TAG, 1) in (5, 6, 7, 8):
                w, h = h, w
            return w, h
    except Exception:
        return read_image(path).shape[1::-1]  # raises DataError with the reason
