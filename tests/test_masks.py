"""pixelwise.data.masks: each rule on hand-built arrays and real files, and the callers that
used to carry their own copy now agreeing with it (same files accepted, same answers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.commands.evaluate_masks import read_label_png
from pixelwise.data.classes import ClassTable, MaskDecoder
from pixelwise.data.masks import (
    class_pixel_counts,
    colorize,
    is_colour_mask,
    is_grey_rgb,
    looks_resized,
    pack_rgb,
    read_label_map,
    read_mask,
    size_mismatch,
    squeeze_grey,
    unpack_rgb,
)
from pixelwise.errors import DataError
from pixelwise.tasks import labels_to_color, looks_interpolated
from pixelwise.visualize import colorize as visualize_colorize

IDS = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)


# ------------------------------------------------------------- grey saved as RGB
def test_grey_rgb_rule():
    grey = np.dstack([IDS] * 3)
    assert is_grey_rgb(grey) and not is_colour_mask(grey)
    assert is_colour_mask(grey, encoding="rgb")  # colour-coded data: grey colours are colours too
    coloured = grey.copy()
    coloured[0, 0, 2] = 9  # one pixel off: a colour mask
    assert not is_grey_rgb(coloured) and is_colour_mask(coloured)
    assert not is_grey_rgb(IDS) and not is_colour_mask(IDS)  # 2-D maps are neither
    assert squeeze_grey(grey).tolist() == IDS.tolist()
    assert squeeze_grey(IDS[..., None]).tolist() == IDS.tolist()
    assert squeeze_grey(coloured) is coloured
    five = np.zeros((2, 3, 5), np.uint8)  # a multi-channel array is not "grey RGB"
    assert not is_colour_mask(five) and squeeze_grey(five) is five


def test_rgb_packing_by_hand():
    rgb = np.array([[[1, 2, 3], [255, 0, 128]]], np.uint8)
    codes = pack_rgb(rgb)
    assert codes.dtype == np.int64
    assert codes.tolist() == [[1 * 65536 + 2 * 256 + 3, 255 * 65536 + 128]]  # no uint8 overflow
    assert unpack_rgb(codes.ravel()) == [(1, 2, 3), (255, 0, 128)]
    assert pack_rgb([(0, 0, 0), (255, 255, 255)]).tolist() == [0, 0xFFFFFF]


# ------------------------------------------------------------- size mismatch
def test_size_mismatch_rule():
    assert size_mismatch((4, 6), (4, 6, 3), "a.png") is None
    assert size_mismatch((4, 6, 3), (4, 6, 1), "a.png") is None  # HxWxC mask: compare H, W
    assert size_mismatch((4, 5), (4, 6, 3), "a.png") == "mask is 5x4 but image a.png is 6x4 (WxH)"
    # (C, H, W) multi-channel masks only where the caller says so (multilabel arrays)
    assert size_mismatch((3, 4, 6), (4, 6, 3), "a.png") is not None
    assert size_mismatch((3, 4, 6), (4, 6, 3), "a.png", channels_first=True) is None


# ------------------------------------------------------------- resize detector
def test_looks_resized_on_hand_built_maps():
    # A ramp 0 -> 2 -> 4 across an edge, 30 rows of it: interpolation between ids 0 and 4
    # where every value on the ramp is a valid id. Only the ramp signature sees it.
    ramp = np.zeros((30, 8), np.uint8)
    ramp[:, 4] = 2
    ramp[:, 5:] = 4
    assert looks_resized(ramp, range(5))
    # The same edge without the middle column: a clean edge, no ramp.
    clean = np.where(np.arange(8) < 5, 0, 4).astype(np.uint8)[None].repeat(30, 0)
    assert not looks_resized(clean, range(5))
    # Invalid values between valid ones, all on the edge (fewer than 20 ramps: one row).
    edge = np.array([[0, 0, 128, 255, 255]], np.uint8).repeat(2, 0)
    assert looks_resized(edge, [0, 255])
    # A whole region with an unknown id: a labelling problem, not interpolation.
    region = np.zeros((20, 20), np.uint8)
    region[5:15, 5:15] = 7  # 7 lies between the valid 0 and 9, but 64 of its 100 pixels are inside
    assert not looks_resized(region, [0, 9])
    # Works on torch tensors with a batch axis, and agrees with the old name in tasks.
    batch = torch.from_numpy(ramp).long()[None]
    assert looks_resized(batch, range(5)) and looks_interpolated(batch, range(5))
    assert not looks_resized(np.zeros((0, 0), np.uint8), [0, 1])


# ------------------------------------------------------------- colour, counts
def test_colorize_is_the_one_colouriser():
    colors = [(10, 20, 30), (40, 50, 60)]
    labels = np.array([[0, 1], [255, -1]], np.int64)
    expected = [[[10, 20, 30], [40, 50, 60]], [[7, 8, 9], [7, 8, 9]]]
    assert colorize(labels, colors, ignore_color=(7, 8, 9)).tolist() == expected
    assert colorize(torch.from_numpy(labels), colors, (7, 8, 9)).tolist() == expected
    assert labels_to_color(labels, colors, (7, 8, 9)).tolist() == expected
    assert visualize_colorize(labels, colors).tolist() == [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [0, 0, 0]]]
    assert colorize(np.array([2, 0]), colors).shape == (2, 3)  # any shape
    with pytest.raises(ValueError, match="integer"):
        colorize(np.array([[0.5]]), colors)


def test_class_pixel_counts_by_hand():
    mask = np.array([[0, 0, 2], [255, 2, 2]], np.uint8)
    assert class_pixel_counts(mask, 3).tolist() == [2, 0, 3]  # 255 (ignore) is past the classes
    assert class_pixel_counts(mask, 256)[255] == 1
    everything = class_pixel_counts(mask)  # every value up to the largest
    assert everything.shape == (256,) and everything[[0, 2, 255]].tolist() == [2, 3, 1] and everything.sum() == 6
    multilabel = np.zeros((2, 2, 2), np.uint8)
    multilabel[0, 0] = [1, 1]
    multilabel[1, 1] = [255, 1]  # ignore in class 0 is not a positive
    assert class_pixel_counts(multilabel, 2).tolist() == [1, 2]


# ------------------------------------------------------------- one reader
def _write_files(folder):
    files = {}
    Image.fromarray(IDS).save(folder / "grey.png")
    files["grey.png"] = IDS
    palette = Image.fromarray(IDS)
    palette.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * 759)  # mode L -> P, indices kept
    assert palette.mode == "P"
    palette.save(folder / "palette.png")
    files["palette.png"] = IDS
    Image.fromarray(np.dstack([IDS] * 3)).save(folder / "grey_rgb.png")
    files["grey_rgb.png"] = IDS
    Image.fromarray(np.dstack([IDS] * 3 + [np.full_like(IDS, 255)])).save(folder / "grey_rgba.png")
    files["grey_rgba.png"] = IDS
    Image.fromarray(IDS.astype(np.uint16) * 300).save(folder / "wide.png")
    files["wide.png"] = IDS.astype(np.uint16) * 300
    np.save(folder / "ids.npy", IDS.astype(np.int32))
    files["ids.npy"] = IDS
    return files


def test_read_label_map_and_read_label_png_accept_the_same_files(tmp_path):
    for name, expected in _write_files(tmp_path).items():
        path = tmp_path / name
        got = read_label_map(path)
        assert got.ndim == 2 and got.tolist() == expected.tolist(), name
        if name.endswith(".png"):  # evaluate-masks reads PNGs with the same reader
            assert read_label_png(path).tolist() == expected.tolist(), name
        # and the training reader + decoder get the same ids from the raw file
        if name != "wide.png":  # (ids 300 and 600 are not in this 3-class table)
            decoder = MaskDecoder(ClassTable(["a", "b", "c"], [(0, 0, 0), (1, 1, 1), (2, 2, 2)]))
            assert decoder.decode(read_mask(path)).tolist() == expected.tolist(), name


def test_read_label_map_refuses_colour_negative_and_unreadable(tmp_path):
    colour = np.dstack([IDS * 80, IDS, IDS])
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour.png.*colour \(RGB\) image"):
        read_label_map(tmp_path / "colour.png")
    np.save(tmp_path / "neg.npy", np.array([[0, -1]], np.int16))
    with pytest.raises(DataError, match="negative"):
        read_label_map(tmp_path / "neg.npy")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="junk.png: cannot read as an image"):
        read_label_map(tmp_path / "junk.png")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(DataError, match="2-D map of class ids"):
        read_label_map(tmp_path / "cube.npy")
