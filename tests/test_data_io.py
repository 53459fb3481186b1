"""Reading images and masks: every input kind, and bad files always as DataError naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.data.io import read_image
from pixelwise.data.masks import read_mask
from pixelwise.errors import DataError


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def test_rgb_gray_and_16bit_keep_values_and_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    gray = rgb[..., 0].copy()
    deep = (np.arange(63, dtype=np.uint16).reshape(7, 9) * 1000)
    assert np.array_equal(read_image(_save(tmp_path / "rgb.png", rgb)), rgb)
    g = read_image(_save(tmp_path / "gray.png", gray))
    assert g.shape == (7, 9, 1) and np.array_equal(g[..., 0], gray)
    d = read_image(_save(tmp_path / "deep.png", deep))
    assert d.dtype == np.uint16 and d.shape == (7, 9, 1) and np.array_equal(d[..., 0], deep)


def test_rgba_alpha_is_dropped_with_a_note(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 17
    with pytest.warns(UserWarning, match="alpha"):
        out = read_image(_save(tmp_path / "a.png", rgba))
    assert out.shape == (4, 5, 3) and (out[..., 0] == 200).all()


def test_multichannel_arrays_reach_the_model(tmp_path):
    import tifffile

    arr = np.random.default_rng(1).integers(0, 60000, (6, 8, 5), dtype=np.uint16)
    np.save(tmp_path / "x.npy", arr)
    tifffile.imwrite(tmp_path / "x.tif", np.moveaxis(arr, -1, 0))  # stored channels-first
    assert np.array_equal(read_image(tmp_path / "x.npy"), arr)
    assert np.array_equal(read_image(tmp_path / "x.tif"), arr)


def test_exif_orientation_is_applied_to_image_and_mask_alike(tmp_path):
    img = np.zeros((4, 6, 3), np.uint8)
    img[0, 0] = 255  # marker in the top-left corner
    mask = np.zeros((4, 6), np.uint8)
    mask[0, 0] = 1
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(img).save(tmp_path / "i.jpg", exif=exif, quality=100)
    Image.fromarray(mask).save(tmp_path / "m.png", exif=exif)
    out_img, out_mask = read_image(tmp_path / "i.jpg"), read_mask(tmp_path / "m.png")
    assert out_img.shape == (6, 4, 3) and out_mask.shape == (6, 4)
    # rotated 90 degrees clockwise, the top-left marker lands top-right
    assert out_mask[0, 3] == 1 and out_mask.sum() == 1
    assert out_img[0, 3, 0] > 200 and out_img[0, 0, 0] < 60


def test_palette_mask_keeps_indices(tmp_path):
    idx = np.array([[0, 1, 2], [255, 2, 1]], np.uint8)
    p = Image.fromarray(idx, mode="P")
    p.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))
    p.save(tmp_path / "p.png")
    assert np.array_equal(read_mask(tmp_path / "p.png"), idx)


def _bad_files(tmp: Path) -> dict[str, Path]:
    good = tmp / "good.png"
    _save(good, np.full((64, 64, 3), 7, np.uint8))
    jpg = tmp / "good.jpg"
    _save(jpg, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    files = {
        "truncated_png": tmp / "trunc.png",
        "truncated_jpg": tmp / "trunc.jpg",
        "empty": tmp / "empty.png",
        "text": tmp / "text.png",
        "loop": tmp / "loop.png",
        "broken_link": tmp / "dangling.png",
    }
    files["truncated_png"].write_bytes(good.read_bytes()[:60])
    files["truncated_jpg"].write_bytes(jpg.read_bytes()[:400])
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    os.symlink(tmp / "loop2.png", files["loop"])
    os.symlink(files["loop"], tmp / "loop2.png")
    os.symlink(tmp / "missing.png", files["broken_link"])
    return files


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, reader):
    for kind, path in _bad_files(tmp_path).items():
        with pytest.raises(DataError) as info:
            reader(path)
        assert info.value.path == path, kind
        assert path.name in str(info.value), kind


def test_non_ascii_names_with_spaces_read_fine(tmp_path):
    path = _save(tmp_path / "école n°1 – ü.png", np.full((3, 3), 5, np.uint8))
    assert read_mask(path)[0, 0] == 5
    bad = tmp_path / "données brisées.png"
    bad.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(DataError, match="données brisées.png"):
        read_image(bad)


def test_negative_mask_values_are_a_clear_error_not_a_wrap_or_crash(tmp_path):
    # .npy with -1 for "ignore" (a common habit), and a 32-bit TIFF holding -1
    np.save(tmp_path / "m.npy", np.array([[0, 1], [-1, 2]], np.int64))
    with pytest.raises(DataError, match="m.npy.*negative values \\(min -1\\)"):
        read_mask(tmp_path / "m.npy")
    Image.fromarray(np.array([[0, 1], [-1, 2]], np.int32), mode="I").save(tmp_path / "m32.tif")
    with pytest.raises(DataError, match="m32.tif.*negative values"):
        read_mask(tmp_path / "m32.tif")
    # the same values without the -1 still read, as unsigned ids
    Image.fromarray(np.array([[0, 1], [3, 2]], np.int32), mode="I").save(tmp_path / "ok32.tif")
    assert read_mask(tmp_path / "ok32.tif").tolist() == [[0, 1], [3, 2]]
