"""Layouts and mask encodings, each built as a small fake tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.data import open_dataset, scan_layout
from pixelwise.errors import DataError, TaskError

RNG = np.random.default_rng(0)


def _img(path: Path, h: int = 8, w: int = 10, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, arr)
    else:
        Image.fromarray(arr).save(path)
    return path


def _blocks(h: int = 8, w: int = 10, values=(0, 1, 2)) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    for k, v in enumerate(values):
        m[:, k * w // len(values):] = v
    return m


def _classes_json(root: Path, names, ignore=255, **extra) -> None:
    colors = [[(40 * i) % 256, (255 - 40 * i) % 256, (90 * i) % 256] for i in range(len(names))]
    data = {"classes": [{"id": i, "name": n, "color": c} for i, (n, c) in enumerate(zip(names, colors))],
            "ignore_index": ignore, **extra}
    (root / "classes.json").write_text(json.dumps(data))


def test_folder_pairs_with_split_folders_match_by_stem_any_extension(tmp_path):
    for split, stems in {"train": ["a", "b", "c"], "val": ["d"], "test": ["e"]}.items():
        for s in stems:
            _img(tmp_path / "images" / split / f"{s}.jpg")
            _mask(tmp_path / "masks" / split / f"{s}.png", _blocks())
    _classes_json(tmp_path, ["bg", "x", "y"])
    layout = scan_layout(tmp_path)
    assert layout.kind == "folder" and list(layout.splits) == ["train", "val", "test"]
    assert [s.name for s in layout.splits["train"]] == ["a", "b", "c"]
    ds = open_dataset(tmp_path, "train")
    assert ds.classes.names == ["bg", "x", "y"] and ds.task.kind == "multiclass"
    image, target = ds[1]
    assert image.shape == (3, 8, 10) and target.dtype.is_floating_point is False
    assert np.array_equal(target.numpy(), _blocks())
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0  # no transform: 0..1 scale


def test_split_lists_and_hash_split(tmp_path):
    for s in "abcdefghij":
        _img(tmp_path / "images" / f"{s}.png")
        _mask(tmp_path / "masks" / f"{s}_mask.png", _blocks())  # a "_mask" suffix still pairs
    layout = scan_layout(tmp_path)
    assert sorted(len(v) for v in layout.splits.values()) and sum(len(v) for v in layout.splits.values()) == 10
    assert any("80/10/10" in n for n in layout.notes)
    assert scan_layout(tmp_path).splits == layout.splits  # stable
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("a\nb.png\nimages/c.png\n")
    (tmp_path / "splits" / "val.txt").write_text("d\n")
    layout = scan_layout(tmp_path)
    assert [s.name for s in layout.splits["train"]] == ["a", "b", "c"]
    assert [s.name for s in layout.splits["val"]] == ["d"]


def test_classes_inferred_from_index_masks_with_report(tmp_path):
    _img(tmp_path / "images" / "a.png")
    _mask(tmp_path / "masks" / "a.png", _blocks(values=(0, 3, 255)))
    layout = scan_layout(tmp_path)
    assert layout.classes.num_classes == 4 and layout.classes.task == "multiclass"
    assert "ids [1, 2] never appear" in layout.classes.source and "255 treated as ignore" in layout.classes.source


def test_binary_0_255_masks_map_to_0_1(tmp_path):
    _img(tmp_path / "images" / "train" / "a.png", mode="L")
    _mask(tmp_path / "masks" / "train" / "a.png", _blocks(values=(0, 255)))
    ds = open_dataset(tmp_path, "train")
    assert ds.task.kind == "binary" and ds.task.num_classes == 2
    assert "0/255" in ds.classes.source
    image, target = ds[0]
    assert image.shape == (1, 8, 10)
    assert set(target.unique().tolist()) == {0, 1} and np.array_equal(target.numpy(), _blocks(values=(0, 1)))


def test_rgb_colour_masks_decode_with_the_colour_table(tmp_path):
    _classes_json(tmp_path, ["bg", "road", "car"])
    colors = json.loads((tmp_path / "classes.json").read_text())["classes"]
    labels = _blocks()
    rgb = np.array([c["color"] for c in colors], np.uint8)[labels]
    _img(tmp_path / "images" / "train" / "a.png")
    _mask(tmp_path / "masks" / "train" / "a.png", rgb)
    ds = open_dataset(tmp_path, "train")
    assert np.array_equal(ds.read_mask(0), labels)
    rgb[0, 0] = (1, 2, 3)  # a colour no class has
    _mask(tmp_path / "masks" / "train" / "a.png", rgb)
    with pytest.raises(DataError, match=r"not in the colour table.*\(1, 2, 3\)"):
        ds.read_mask(0)


def test_rgb_masks_without_table_infer_one_class_per_colour(tmp_path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, 5:] = (200, 10, 10)
    _img(tmp_path / "images" / "a.png")
    _mask(tmp_path / "masks" / "a.png", rgb)
    layout = scan_layout(tmp_path)
    assert layout.encoding == "rgb" and layout.classes.colors == [(0, 0, 0), (200, 10, 10)]
    ds = open_dataset(tmp_path, "all")
    assert ds.task.kind == "binary" and ds.read_mask(0)[:, 5:].min() == 1


def test_uint16_index_masks(tmp_path):
    _classes_json(tmp_path, [f"c{i}" for i in range(300)], ignore=65535)
    m = np.array([[0, 299], [1, 65535]], np.uint16)
    _img(tmp_path / "images" / "train" / "a.png", 2, 2)
    _mask(tmp_path / "masks" / "train" / "a.png", m)
    target = open_dataset(tmp_path, "train")[0][1]
    assert target.tolist() == [[0, 299], [1, 65535]]


def test_multilabel_folder_per_class_and_npy(tmp_path):
    a = (_blocks(values=(0, 1)) == 1).astype(np.uint8) * 255
    b = np.zeros_like(a)
    b[:4] = 255
    for s in ("x", "y"):
        _img(tmp_path / "ml" / "images" / "train" / f"{s}.png")
        _mask(tmp_path / "ml" / "masks" / "train" / "scratch" / f"{s}.png", a)
        _mask(tmp_path / "ml" / "masks" / "train" / "spot" / f"{s}.png", b)
    ds = open_dataset(tmp_path / "ml", "train")
    assert ds.task.kind == "multilabel" and ds.classes.names == ["scratch", "spot"]
    _, target = ds[0]
    assert target.dtype.is_floating_point and target.shape == (2, 8, 10)
    assert np.array_equal(target[0].numpy(), a / 255) and np.array_equal(target[1].numpy(), b / 255)

    root = tmp_path / "npy"
    _classes_json(root.mkdir() or root, ["p", "q", "r"], task="multilabel")
    arr = RNG.integers(0, 2, (3, 8, 10)).astype(np.uint8)  # channels-first on disk
    _img(root / "images" / "train" / "z.png")
    _mask(root / "masks" / "train" / "z.npy", arr)
    target = open_dataset(root, "train")[0][1]
    assert np.array_equal(target.numpy(), arr)
    with pytest.raises(TaskError):
        open_dataset(root, "train", task="multiclass")


def test_pascal_voc_layout(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    ids = ["2007_000032", "2007_000033", "2007_000042"]
    for i in ids:
        _img(root / "JPEGImages" / f"{i}.jpg")
        p = Image.fromarray(_blocks(values=(0, 15, 255)), mode="P")
        p.putpalette([v for c in range(256) for v in (c, c, c)])
        (root / "SegmentationClass").mkdir(exist_ok=True)
        p.save(root / "SegmentationClass" / f"{i}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text(ids[2] + "\n")
    ds = open_dataset(tmp_path / "VOCdevkit", "val")
    assert ds.classes.num_classes == 21 and ds.classes.names[15] == "person"
    assert ds.classes.colors[1] == (128, 0, 0)  # the VOC palette
    assert len(ds) == 1 and set(ds[0][1].unique().tolist()) == {0, 15, 255}
    assert len(open_dataset(root, "train")) == 2


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    raw = np.array([[7, 8, 26, 33], [0, 1, 6, 255]], np.uint8)  # road, sidewalk, car, bicycle; rest void
    for split in ("train", "val"):
        _img(tmp_path / "leftImg8bit" / split / "aachen" / "aachen_000000_000019_leftImg8bit.png", 2, 4)
        _mask(tmp_path / "gtFine" / split / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", raw)
        _mask(tmp_path / "gtFine" / split / "aachen" / "aachen_000000_000019_gtFine_color.png",
              np.zeros((2, 4, 3), np.uint8))
    ds = open_dataset(tmp_path, "val")
    assert ds.classes.num_classes == 19 and ds.classes.names[13] == "car"
    assert ds[0][1].tolist() == [[0, 1, 13, 18], [255, 255, 255, 255]]
    assert scan_layout(tmp_path).orphan_masks == []  # colour pngs are not counted as masks


def test_camvid_segnet_layout_maps_11_to_ignore(tmp_path):
    for split in ("train", "val", "test"):
        _img(tmp_path / split / "0001TP_006690.png")
        _mask(tmp_path / f"{split}annot" / "0001TP_006690.png", _blocks(values=(3, 10, 11)))
    ds = open_dataset(tmp_path, "test")
    assert ds.classes.names[3] == "Road" and ds.classes.num_classes == 11
    assert set(ds[0][1].unique().tolist()) == {3, 10, 255}


def test_unknown_layout_and_missing_folder_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope", "train")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="no known layout"):
        open_dataset(tmp_path / "stuff", "train")


def test_size_mismatch_names_the_mask(tmp_path):
    _img(tmp_path / "images" / "train" / "a.png", 8, 10)
    _mask(tmp_path / "masks" / "train" / "a.png", np.zeros((8, 9), np.uint8))
    _classes_json(tmp_path, ["bg", "fg"])
    with pytest.raises(DataError, match=r"a\.png.*mask is 9x8 but image a.png is 10x8"):
        open_dataset(tmp_path, "train")[0]


def test_real_camvid_and_isbi(camvid_dir, isbi_dir):
    ds = open_dataset(camvid_dir, "val")
    assert len(ds) == 101 and ds.classes.names[0] == "Sky" and ds.task.kind == "multiclass"
    image, target = ds[0]
    assert image.shape == (3, 360, 480) and target.shape == (360, 480)
    isbi = open_dataset(isbi_dir, "train")
    assert len(isbi) == 20 and isbi.task.kind == "binary" and isbi.in_channels == 1
