"""The bad-input corpus: small files committed in tests/data/bad_inputs, big or odd ones made here.

Small files (a few hundred bytes each) live in `tests/data/bad_inputs/` so a reader can open
them; `write_small_corpus(folder)` regenerates them byte for byte (deterministic):

    python tests/data/make_bad_inputs.py tests/data/bad_inputs

Things that cannot or should not be committed are built at test time into a temp folder:
a decompression bomb (tiny file, ~2.5 gigapixels once decoded), a symlink loop, a large image
for the tiling path. `make_dataset` builds a tiny valid folder-pairs data set
(images/{split}, masks/{split}, classes.json) and `inject_case` puts one bad case into it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "bad_inputs"

SIZE = 32  # side of the tiny valid images: small enough for any model, big enough to crop
NUM_CLASSES = 3
CLASS_NAMES = ["background", "square", "stripe"]
CLASS_COLORS = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
NON_ASCII_NAME = "café façade 01"  # spaces and non-ASCII characters in one stem


# --------------------------------------------------------------------------- valid pieces
def valid_image(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A deterministic RGB uint8 (size, size, 3) image that matches `valid_mask(seed)`."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 90, size=(size, size, 3), dtype=np.uint8)
    mask = valid_mask(seed, size)
    image[mask == 1] = (220, 30, 30)
    image[mask == 2] = (30, 30, 220)
    return image


def valid_mask(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A deterministic uint8 (size, size) label map with classes 0..2."""
    mask = np.zeros((size, size), dtype=np.uint8)
    o = 4 + seed % 8
    mask[o : o + size // 3, o : o + size // 3] = 1
    mask[:, size - 6 - seed % 4 : size - 3 - seed % 4] = 2
    return mask


def png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H,W), (H,W,3), (H,W,4) or uint16 (H,W) array (16-bit stays 16-bit)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


# --------------------------------------------------------------------------- small corpus
@dataclass(frozen=True)
class Case:
    """One corpus entry: a file name, which side it sits on, and whether it is valid input."""

    name: str
    role: str  # "image" or "mask"
    valid: bool
    problem: str  # what is wrong (or special) about it, for the docs and test ids


CASES = [
    Case("truncated.png", "image", False, "PNG cut in half"),
    Case("truncated.jpg", "image", False, "JPEG cut in half"),
    Case("empty.png", "image", False, "zero-byte file"),
    Case("text.png", "image", False, "a text file named .png"),
    Case("one_pixel.png", "image", True, "a 1x1 image (valid but degenerate)"),
    Case("cmyk.jpg", "image", True, "CMYK JPEG (converted to RGB)"),
    Case("rgba.png", "image", True, "RGBA PNG (alpha dropped with a note)"),
    Case("exif_rotated.jpg", "image", True, "stored 40 wide x 20 high, EXIF orientation 6 (display 20x40)"),
    Case(f"{NON_ASCII_NAME}.png", "image", True, "non-ASCII file name with spaces"),
    Case("mask_small.png", "mask", False, "mask 16x16 for a 32x32 image"),
    Case("mask_out_of_range.png", "mask", False, "mask values 7 and 9 with only 3 classes"),
    Case("mask_rgb.png", "mask", False, "RGB colour mask with no colour table"),
    Case("mask_16bit.png", "mask", True, "16-bit mask with in-range values"),
    Case("mask_16bit_out_of_range.png", "mask", False, "16-bit mask with value 300"),
]


def write_small_corpus(folder: str | Path) -> Path:
    """Write every small corpus file into `folder` (deterministic bytes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = valid_image(0)
    good_png = png_bytes(image)
    good_jpg = jpeg_bytes(Image.fromarray(image))
    (folder / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (folder / "truncated.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image, just text with a .png name\n")
    (folder / "one_pixel.png").write_bytes(png_bytes(np.full((1, 1, 3), 128, np.uint8)))
    (folder / "cmyk.jpg").write_bytes(jpeg_bytes(Image.fromarray(image).convert("CMYK")))
    rgba = np.dstack([image, np.full((SIZE, SIZE), 200, np.uint8)])
    (folder / "rgba.png").write_bytes(png_bytes(rgba))
    (folder / "exif_rotated.jpg").write_bytes(exif_rotated_jpeg())
    (folder / f"{NON_ASCII_NAME}.png").write_bytes(png_bytes(valid_image(1)))

    mask = valid_mask(0)
    (folder / "mask_small.png").write_bytes(png_bytes(mask[:16, :16]))
    bad = mask.copy()
    bad[0, 0], bad[1, 1] = 7, 9
    (folder / "mask_out_of_range.png").write_bytes(png_bytes(bad))
    colours = np.array(CLASS_COLORS, np.uint8)[mask]
    (folder / "mask_rgb.png").write_bytes(png_bytes(colours))
    (folder / "mask_16bit.png").write_bytes(png_bytes(mask.astype(np.uint16)))
    wide = mask.astype(np.uint16)
    wide[2, 2] = 300
    (folder / "mask_16bit_out_of_range.png").write_bytes(png_bytes(wide))
    return folder


def exif_rotated_jpeg() -> bytes:
    """A JPEG stored 40 wide x 20 high whose EXIF says "rotate 90 CW" (orientation 6).

    The stored left half is red, the right half blue. Orientation 6 means "turn 90 degrees
    clockwise to display": the stored left column becomes the top row, so the displayed image
    is 20 wide x 40 high, red on top and blue below.
    """
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (230, 20, 20)
    stored[:, 20:] = (20, 20, 230)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return jpeg_bytes(Image.fromarray(stored), exif=exif.tobytes())


# --------------------------------------------------------------------------- generated at test time
def make_bomb(path: str | Path, side: int = 50_000) -> Path:
    """A valid 1-bit PNG of side x side pixels (2.5 gigapixels by default) in ~300 KB.

    Written by hand (IHDR + one streamed IDAT) so making it never allocates the image.
    Decoding it to 8-bit RGB would need ~7.5 GB: loaders must refuse it by pixel count.
    """
    path = Path(path)
    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte 0 + packed bits
    compressor = zlib.compressobj(9)
    chunks = []
    rows_per_feed = 256
    for start in range(0, side, rows_per_feed):
        chunks.append(compressor.compress(row * min(rows_per_feed, side - start)))
    chunks.append(compressor.flush())
    idat = b"".join(chunks)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def make_symlink_loop(folder: str | Path, stem: str = "loop") -> Path:
    """Two file symlinks pointing at each other (`stem.png` -> `stem_b.png` -> `stem.png`).

    Returns the path of `stem.png`; opening it fails with ELOOP.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a, b = folder / f"{stem}.png", folder / f"{stem}_b.png"
    os.symlink(b.name, a)
    os.symlink(a.name, b)
    return a


def make_large_image(path: str | Path, height: int, width: int) -> Path:
    """A large RGB PNG with cheap-to-compress structure (gradients), for the tiling path."""
    path = Path(path)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = y.astype(np.uint8)
    image[..., 1] = x.astype(np.uint8)
    image[..., 2] = 128
    Image.fromarray(image).save(path, compress_level=1)
    return path


def make_dataset(root: str | Path, splits: tuple[str, ...] = ("train", "val"), per_split: int = 4) -> Path:
    """A tiny valid folder-pairs data set: images/{split}/*.png, masks/{split}/*.png, classes.json."""
    root = Path(root)
    for s, split in enumerate(splits):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(per_split):
            seed = 10 * s + i
            Image.fromarray(valid_image(seed)).save(root / "images" / split / f"img{i:02d}.png")
            Image.fromarray(valid_mask(seed)).save(root / "masks" / split / f"img{i:02d}.png")
    write_classes_json(root)
    return root


def write_classes_json(root: Path) -> None:
    classes = [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(CLASS_NAMES, CLASS_COLORS))]
    (root / "classes.json").write_text(json.dumps({"classes": classes, "ignore_index": 255}, indent=1))


# Each bad case as it appears inside a data set: (case id, what to do). `inject_case` returns the
# path of the offending file (or folder), which the error message must name.
DATASET_CASES = [
    "truncated_png",
    "truncated_jpg",
    "empty_png",
    "text_png",
    "mask_size_mismatch",
    "mask_out_of_range",
    "mask_16bit_out_of_range",
    "symlink_loop",
    "bomb",
]


def inject_case(root: Path, case: str, split: str = "train") -> Path:
    """Put one bad case into the data set at `root` (made by `make_dataset`); return the bad path."""
    images, masks = root / "images" / split, root / "masks" / split
    mask_for = lambda stem: Image.fromarray(valid_mask(0)).save(masks / f"{stem}.png")  # noqa: E731
    simple = {
        "truncated_png": ("truncated.png", "image"),
        "truncated_jpg": ("truncated.jpg", "image"),
        "empty_png": ("empty.png", "image"),
        "text_png": ("text.png", "image"),
        "mask_size_mismatch": ("mask_small.png", "mask"),
        "mask_out_of_range": ("mask_out_of_range.png", "mask"),
        "mask_16bit_out_of_range": ("mask_16bit_out_of_range.png", "mask"),
    }
    if case in simple:
        source, role = simple[case]
        stem = f"bad_{case}"
        suffix = Path(source).suffix
        if role == "image":
            target = images / f"{stem}{suffix}"
            target.write_bytes((CORPUS / source).read_bytes())
            mask_for(stem)
        else:
            Image.fromarray(valid_image(0)).save(images / f"{stem}.png")
            target = masks / f"{stem}.png"
            target.write_bytes((CORPUS / source).read_bytes())
        return target
    if case == "symlink_loop":
        target = make_symlink_loop(images, "bad_loop")  # bad_loop.png <-> bad_loop_b.png
        mask_for("bad_loop")
        mask_for("bad_loop_b")
        return target
    if case == "bomb":
        target = make_bomb(images / "bad_bomb.png")
        mask_for("bad_bomb")
        return target
    raise ValueError(f"unknown case {case!r}; known: {DATASET_CASES}")


if __name__ == "__main__":
    out = write_small_corpus(sys.argv[1] if len(sys.argv) > 1 else CORPUS)
    print(f"wrote {len(CASES)} files to {out}")


# --------------------------------------------------------------------------- running the CLI
REPO = HERE.parents[1]


def command_exists(name: str) -> bool:
    """Whether `pixelwise <name>` has been written yet (its module under commands/)."""
    return (REPO / "src" / "pixelwise" / "commands" / f"{name}.py").is_file()


def run_pixelwise(*args: str | Path, timeout: float = 300, cwd: Path | None = None, env: dict | None = None):
    """Run `python -m pixelwise ARGS...` in a real subprocess; returns CompletedProcess (text)."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pixelwise", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=full_env,
    )


def assert_clear_failure(result, *names: str) -> None:
    """A user error: non-zero exit, no traceback, and every name in `names` in the output."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"expected failure, got exit 0:\n{output[-3000:]}"
    assert "Traceback" not in result.stderr, f"traceback instead of a clear message:\n{result.stderr[-3000:]}"
    for name in names:
        assert name in output, f"{name!r} not named in the message:\n{output[-3000:]}"
