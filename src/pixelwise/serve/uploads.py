"""Turn untrusted upload bytes into an image array, or a clear HTTP error.

Checks run cheapest first: size of the bytes, then the header (format and dimensions,
read without decoding pixels), and only then the full decode. A small file that claims
a huge image (a decompression bomb) is refused from its header alone.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class UploadError(Exception):
    """An upload the service refuses: HTTP `status` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Upload bytes -> (H, W, C) uint8 or uint16 array, EXIF orientation applied.

    Raises UploadError: 422 empty or corrupt, 415 not an image, 413 too many pixels.
    """
    if not data:
        raise UploadError(422, "the uploaded file is empty")
    try:
        img = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"image refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise UploadError(415, "the upload is not an image format this service reads (PNG, JPEG, TIFF, BMP, WebP, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UploadError(422, f"the image header is corrupt: {exc}") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise UploadError(413, f"image is {width}x{height} = {width * height} pixels; this service accepts at most {max_pixels}")
        if width == 0 or height == 0:
            raise UploadError(422, f"image has no pixels ({width}x{height})")
        try:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_array(img)
        except Image.DecompressionBombError as exc:
            raise UploadError(413, f"image refused as a decompression bomb: {exc}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise UploadError(422, f"the image is corrupt or truncated: {exc}") from None


def _to_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("L", "LA", "RGB", "RGBA"):
        array = np.asarray(img)
    elif img.mode.startswith("I;16"):
        array = np.asarray(img).astype(np.uint16)
    elif img.mode in ("I", "F"):
        # 32-bit gray (often 16-bit data widened by Pillow): keep it as uint16.
        array = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
    elif img.mode == "1":
        array = np.asarray(img.convert("L"))
    elif img.mode in ("P", "PA"):
        array = np.asarray(img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB"))
    else:  # CMYK, YCbCr, LAB, HSV, ...
        array = np.asarray(img.convert("RGB"))
    if array.ndim == 2:
        array = array[..., None]
    # np.asarray over a PIL image is read-only; torch.from_numpy warns on those, so copy once.
    return np.array(array, copy=True, order="C")
