"""The strip-wise overlay and the streaming PNG writer behind `pixelwise predict`'s bounded memory.

The oracle for the picture is the whole-image path (`add_legend(overlay(...))`); the oracle for
the file format is Pillow's PNG decoder.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from pixelwise.visualize import add_legend, overlay, overlay_strips, save_overlay_png, write_png_strips


def _whole(image, labels, colors, alpha, ignore_index, names, present):
    blended = overlay(image, labels, colors, alpha=alpha, ignore_index=ignore_index)
    return blended if names is None else add_legend(blended, names, colors, present=present)


@pytest.mark.parametrize("height, width, classes, rows, present", [
    (97, 61, 5, 16, [0, 2, 4]),     # strips that do not divide the height
    (7, 13, 12, 3, None),           # a legend taller than the image: white rows below it
    (64, 40, 3, 1000, None),        # one strip holds everything
    (33, 20, 4, 8, []),             # nothing present: an empty legend panel
])
def test_strips_equal_the_whole_image_overlay_with_legend(height, width, classes, rows, present):
    rng = np.random.default_rng(height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = rng.integers(0, classes + 1, (height, width)).astype(np.uint8)  # id == classes: no colour
    labels[0, :3] = 255
    colors = rng.integers(0, 256, (classes, 3)).tolist()
    names = [f"class {i}" for i in range(classes)]
    for alpha, ignore_index in ((0.5, 255), (0.3, None)):
        expected = _whole(image, labels, colors, alpha, ignore_index, names, present)
        total_w, total_h, strips = overlay_strips(image, labels, colors, alpha, ignore_index, names=names,
                                                  present=present, rows=rows)
        got = np.concatenate(list(strips))
        assert (total_h, total_w) == expected.shape[:2]
        assert got.shape == expected.shape and np.array_equal(got, expected)


def test_strips_equal_the_whole_image_for_multilabel_and_gray_uint16_without_legend():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 65536, (45, 30, 1), dtype=np.uint16)
    masks = rng.integers(0, 2, (3, 45, 30)).astype(np.uint8)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    expected = overlay(image, masks, colors, alpha=0.6)
    _, _, strips = overlay_strips(image, masks, colors, 0.6, rows=10)
    assert np.array_equal(np.concatenate(list(strips)), expected)


def test_streamed_png_decodes_to_the_same_pixels_with_pillow():
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (50, 31, 3), dtype=np.uint8)
    picture[10:30] = picture[10]  # flat runs too, where the filter gives zeros
    buffer = io.BytesIO()
    write_png_strips(buffer, 31, 50, [picture[i:i + 7] for i in range(0, 50, 7)])
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()  # Pillow checks every chunk's CRC while decoding
    assert decoded.mode == "RGB" and decoded.size == (31, 50)
    assert np.array_equal(np.asarray(decoded), picture)
    # The IDAT chunks hold one zlib stream: 50 scanlines of a filter byte + 31 * 3 bytes; the flat rows
    # (a copy of the row above) are filtered with Up (2), which makes them all zeros.
    data, pos, stream = buffer.getvalue(), 8, b""
    while pos < len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        stream += data[pos + 8:pos + 8 + length] if kind == b"IDAT" else b""
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(stream), np.uint8).reshape(50, 1 + 31 * 3)
    assert set(raw[:, 0]) <= {0, 1, 2, 4} and (raw[11:30, 0] == 2).all() and not raw[11:30, 1:].any()


def test_streamed_png_refuses_strips_that_do_not_fit_the_header():
    with pytest.raises(ValueError, match="rows"):
        write_png_strips(io.BytesIO(), 4, 5, [np.zeros((3, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="wide"):
        write_png_strips(io.BytesIO(), 4, 3, [np.zeros((3, 5, 3), np.uint8)])


def test_save_overlay_png_writes_the_whole_image_picture_atomically(tmp_path):
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (70, 90)).astype(np.uint8)
    colors, names = [(10, 200, 30), (250, 0, 0), (0, 0, 255)], ["a", "b", "c"]
    path = save_overlay_png(tmp_path / "o.png", image, labels, colors, 0.5, None, names=names, present=[0, 1, 2],
                            rows=9)
    assert np.array_equal(np.asarray(Image.open(path)), _whole(image, labels, colors, 0.5, None, names, [0, 1, 2]))
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]  # no temp file left behind


@pytest.mark.parametrize("mode, shape, dtype", [("RGB", (1500, 3001, 3), np.uint8), ("L", (2900, 1451), np.uint8),
                                                ("I;16", (1450, 2901), np.uint16)])
def test_large_images_are_read_in_strips_to_the_same_array(tmp_path, mode, shape, dtype, monkeypatch):
    """read_image copies images over 4 M pixels from Pillow strip by strip; same array as np.array."""
    from pixelwise.data import io as data_io

    monkeypatch.setattr(data_io, "_STRIP_PIXELS", 1 << 20)  # strips of ~1 M pixels: several, last one short
    array = np.random.default_rng(5).integers(0, 256 if dtype == np.uint8 else 65536, shape).astype(dtype)
    Image.fromarray(array).save(tmp_path / "big.png")
    got = data_io.read_image(tmp_path / "big.png")
    assert got.dtype == dtype and got.flags.writeable
    assert np.array_equal(got, array.reshape(shape[0], shape[1], -1))
