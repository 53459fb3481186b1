"""A short fuzzing run of the image and mask decoders: only DataError may come out.

Three sources of inputs: arbitrary bytes; valid PNG/JPEG files with bytes flipped, cut or
inserted; and valid PNGs with one chunk's data changed *and its CRC fixed*, so the decoder
gets past the checksum and into the header/pixel parsing. Whatever the input,
`read_image` / `read_mask` either return an array or raise `DataError` naming the file.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_bad_inputs import png_bytes, valid_image, valid_mask  # noqa: E402

from pixelwise.errors import DataError  # noqa: E402

from pixelwise.data import read_image, read_mask  # noqa: E402

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same inputs in CI and locally: a failure reproduces
)

SEEDS = {
    "rgb.png": png_bytes(valid_image(0, 16)),
    "mask.png": png_bytes(valid_mask(0, 16)),
    "mask16.png": png_bytes(valid_mask(0, 16).astype(np.uint16)),
}
_jpeg = io.BytesIO()
Image.fromarray(valid_image(0, 16)).save(_jpeg, format="JPEG")
SEEDS["rgb.jpg"] = _jpeg.getvalue()


def _decode(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    for reader in (read_image, read_mask):
        try:
            out = reader(path)
        except DataError as exc:
            assert name in str(exc), f"DataError does not name the file: {exc}"
        else:
            assert isinstance(out, np.ndarray) and out.ndim in (2, 3)


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    """A seed file with a few byte flips, a cut, and/or an inserted run of bytes."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=32))
    return name, bytes(data)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in chunks:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return b"".join(out)


@st.composite
def chunk_mutated_png(draw) -> tuple[str, bytes]:
    """A valid PNG with one chunk's bytes changed and the CRC recomputed (passes checksums)."""
    name = draw(st.sampled_from(["rgb.png", "mask.png", "mask16.png"]))
    chunks = _png_chunks(SEEDS[name])
    index = draw(st.integers(0, len(chunks) - 1))
    kind, body = chunks[index]
    body = bytearray(body)
    if kind == b"IDAT" and draw(st.booleans()):
        # Change the pixels but keep the zlib stream valid, so the filter/size logic is hit.
        raw = bytearray(zlib.decompress(bytes(body)))
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        raw = raw[: draw(st.integers(0, len(raw)))]
        body = bytearray(zlib.compress(bytes(raw)))
    elif body:
        for _ in range(draw(st.integers(1, 4))):
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    if kind == b"IHDR":
        # Keep dimensions modest: a huge claimed size is the bomb test's business, not a fuzz case.
        width, height = struct.unpack(">II", bytes(body[:8]))
        body[:8] = struct.pack(">II", width % 64, height % 64)
    chunks[index] = (kind, bytes(body))
    return name, _png_from_chunks(chunks)


@FUZZ
@given(data=st.binary(max_size=512), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".webp", ".npy"]))
def test_arbitrary_bytes_only_raise_data_error(tmp_path, data, suffix):
    _decode(tmp_path, f"fuzz{suffix}", data)


@FUZZ
@given(case=mutated())
def test_mutated_files_only_raise_data_error(tmp_path, case):
    name, data = case
    _decode(tmp_path, name, data)


@FUZZ
@given(case=chunk_mutated_png())
def test_chunk_mutated_png_only_raises_data_error(tmp_path, case):
    name, data = case
    _decode(tmp_path, name, data)


def test_seeds_decode_to_what_was_written(tmp_path):
    # The fuzz seeds themselves are valid: the decoders are not just raising on everything.
    for name in ("rgb.png", "mask.png", "mask16.png"):
        (tmp_path / name).write_bytes(SEEDS[name])
    assert np.array_equal(read_image(tmp_path / "rgb.png"), valid_image(0, 16))
    assert np.array_equal(read_mask(tmp_path / "mask.png"), valid_mask(0, 16))
    mask16 = read_mask(tmp_path / "mask16.png")
    assert mask16.dtype == np.uint16 and np.array_equal(mask16, valid_mask(0, 16))
