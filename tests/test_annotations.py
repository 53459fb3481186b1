"""Annotation exports as data: COCO (pycocotools as the oracle), LabelMe, CVAT 1.1, Label
Studio; bad input named; masks -> polygons -> masks exact; CamVid through COCO and back.

Fixture origins are stated per test: LabelMe's own example file, files written per each
tool's documented schema, RLEs made by pycocotools itself, and a brush RLE vector published in
label-studio-converter's tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from pixelwise.data import open_dataset
from pixelwise.data.annotations import labelstudio
from pixelwise.data.annotations.convert import convert
from pixelwise.data.annotations.polygons import objects
from pixelwise.data.annotations.rasterise import polygons_mask
from pixelwise.data.check import check_data
from pixelwise.errors import DataError

DATA = Path(__file__).parent / "data" / "annotations"


def _image(path: Path, w: int, h: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)
    return path


def _labels(spec, split="all") -> list[np.ndarray]:
    ds = open_dataset(spec, split)
    return [ds.read_mask(i) for i in range(len(ds))]


# --------------------------------------------------------------------------- the rasteriser
def test_square_on_integer_corners_is_exactly_that_square():
    m = polygons_mask([np.array([[2, 3], [7, 3], [7, 5], [2, 5]], float)], 10, 10)
    expected = np.zeros((10, 10), bool)
    expected[3:5, 2:7] = True  # rows 3..4, columns 2..6
    assert np.array_equal(m, expected)


def test_outside_coordinates_are_clipped():
    m = polygons_mask([np.array([[-5, -5], [4, -5], [4, 3], [-5, 3]], float)], 6, 6)
    expected = np.zeros((6, 6), bool)
    expected[:3, :4] = True
    assert np.array_equal(m, expected)


# --------------------------------------------------------------------------- COCO
def _coco_fixture(tmp_path: Path) -> Path:
    """Written per cocodataset.org/#format-data; the RLEs are pycocotools' own encodings."""
    h, w = 40, 50
    _image(tmp_path / "images" / "a.png", w, h)
    _image(tmp_path / "images" / "b.png", w, h)
    _image(tmp_path / "images" / "empty.png", w, h)
    blob = np.zeros((h, w), np.uint8)
    blob[10:30, 20:45] = 1
    blob[15:25, 30:40] = 0  # a hole: only RLE can hold it
    compressed = coco_mask.encode(np.asfortranarray(blob))
    ring = np.zeros((h, w), np.uint8)
    ring[0:6, 0:8] = 1
    runs, prev, n = [], 0, 0
    for v in ring.ravel(order="F"):  # uncompressed RLE: column-major runs, starting with zeros
        if v != prev:
            runs.append(n)
            n, prev = 0, v
        n += 1
    runs.append(n)
    data = {
        "images": [{"id": 11, "file_name": "a.png", "width": w, "height": h},
                   {"id": 12, "file_name": "b.png", "width": w, "height": h},
                   {"id": 13, "file_name": "empty.png", "width": w, "height": h}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 42, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            # two polygons in one annotation: unioned
            {"id": 1, "image_id": 11, "category_id": 7, "iscrowd": 0,
             "segmentation": [[2, 2, 12, 2, 12, 9, 2, 9], [30.5, 20.2, 44.7, 22.1, 38.3, 35.9]]},
            {"id": 2, "image_id": 11, "category_id": 42, "iscrowd": 0,  # overlaps 1: drawn on top
             "segmentation": [[8, 5, 20, 5, 20, 15, 8, 15]]},
            {"id": 3, "image_id": 12, "category_id": 3, "iscrowd": 1,
             "segmentation": {"size": [h, w], "counts": compressed["counts"].decode()}},
            {"id": 4, "image_id": 12, "category_id": 42, "iscrowd": 1, "segmentation": {"size": [h, w], "counts": runs}},
        ]}
    (tmp_path / "coco.json").write_text(json.dumps(data))
    return tmp_path / "coco.json"


def test_coco_masks_identical_to_pycocotools(tmp_path):
    path = _coco_fixture(tmp_path)
    ds = open_dataset(path, "all")
    assert ds.classes.names == ["background", "car", "cat", "dog"]  # ids 3, 7, 42 -> 1, 2, 3
    by_name = {ds.samples[i].name: ds.read_mask(i) for i in range(len(ds))}
    assert set(by_name) == {"a", "b", "empty"}
    for name, expected in _oracle_labels(path).items():
        assert np.array_equal(by_name[name], expected), name
    assert (by_name["empty"] == 0).all()
    assert (by_name["b"][15:25, 30:40] == 0).all() and (by_name["b"][10:15, 20:45] == 1).all()  # hole kept


def _oracle_labels(path: Path) -> dict[str, np.ndarray]:
    """Label maps composed from pycocotools' own masks (file order, later on top)."""
    oracle = COCO(str(path))
    class_of = {3: 1, 7: 2, 42: 3}
    out = {}
    for img in oracle.dataset["images"]:
        expected = np.zeros((img["height"], img["width"]), np.uint8)
        for ann in oracle.loadAnns(oracle.getAnnIds(imgIds=[img["id"]])):
            expected[oracle.annToMask(ann) > 0] = class_of[ann["category_id"]]
        out[Path(img["file_name"]).stem] = expected
    return out


def test_bad_coco_input_is_named(tmp_path):
    """Polygon < 3 points, self-intersection, missing image, unknown category, RLE size."""
    _image(tmp_path / "a.png", 20, 10)
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10},
                       {"id": 2, "file_name": "gone.png", "width": 20, "height": 10}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [
                {"id": 101, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1]]},
                {"id": 102, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 8, 8, 8, 0, 0, 8]]},
                {"id": 103, "image_id": 1, "category_id": 9, "segmentation": [[0, 0, 4, 0, 4, 4]]},
                {"id": 104, "image_id": 1, "category_id": 1, "segmentation": {"size": [11, 20], "counts": [220]}},
            ]}
    (tmp_path / "coco.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="skipped"):
        report = check_data(tmp_path / "coco.json")
    text = report.summary()
    assert not report.ok
    assert "annotation 101: polygon with fewer than 3 points" in text
    assert "annotation 102: polygon 0 crosses itself: filled even-odd" in text
    assert "annotation 103: unknown category" in text
    assert "annotation 104: RLE size mismatch" in text
    assert "'gone.png' is referenced but missing" in text
    assert "3 skipped" in text  # 101, 103, 104; 102 is drawn
    # the bow tie (left and right triangles) is drawn even-odd, as pycocotools fills it
    labels = _labels(tmp_path / "coco.json")[0]
    assert labels[4, 1] == 1 and labels[4, 18] == 0 and labels[1, 4] == 0 and labels[4, 6] == 1


def test_malformed_json_and_xml_name_the_file(tmp_path):
    bad = tmp_path / "coco.json"
    bad.write_text('{"images": [,]}')
    with pytest.raises(DataError, match=r"coco.json: malformed JSON at line 1"):
        open_dataset(bad, "all")
    xml = tmp_path / "ann.xml"
    xml.write_text("<annotations><image id='0' name='a.png'></annotations>")
    with pytest.raises(DataError, match=r"ann.xml: malformed XML"):
        open_dataset(xml, "all")
    proc = subprocess.run([sys.executable, "-m", "pixelwise", "data", "check", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "malformed JSON" in proc.stderr


# --------------------------------------------------------------------------- LabelMe
def test_labelme_primitives_example(tmp_path):
    """labelme's own examples/primitives/primitives.json (github.com/wkentaro/labelme); the
    image is a blank stand-in of the stated 560x450 size (pixels do not matter here)."""
    shutil.copy(DATA / "labelme_primitives.json", tmp_path / "primitives.json")
    _image(tmp_path / "primitives.jpg", 560, 450)
    with pytest.warns(UserWarning, match="1 point shapes ignored"):
        ds = open_dataset(f"{tmp_path}?line_width=6", "all")
    names = ds.classes.names
    assert names == ["background", "circle", "line", "line_strip", "polygon", "rectangle"]
    labels = ds.read_mask(0)
    rect = labels == names.index("rectangle")
    assert rect[35:135, 32:132].all() and rect[33:135, 391:542].all()
    assert rect.sum() == 100 * 100 + 151 * 102  # corners on integers: exactly the boxes
    r = np.hypot(225 - 195, 125 - 84)
    assert abs((labels == names.index("circle")).sum() / (np.pi * r * r) - 1) < 0.01
    length = np.hypot(188 - 160, 178 - 224)
    line_area = (labels == names.index("line")).sum()
    assert abs(line_area - (length * 6 + np.pi * 9)) < 0.05 * line_area  # 6 px wide, round caps
    assert labels[174, 345] == 0  # the point is not drawn
    report = check_data(f"{tmp_path}?line_width=6")
    assert "1 point shapes ignored (no area)" in report.summary() and report.ok


# --------------------------------------------------------------------------- CVAT
CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><labels>
    <label><name>road</name><type>any</type></label>
    <label><name>car</name><type>any</type></label>
    <label><name>lane</name><type>any</type></label>
  </labels></task></meta>
  <image id="0" name="frame.png" width="30" height="20" subset="Train">
    <box label="car" source="manual" occluded="0" xtl="2" ytl="2" xbr="10" ybr="8" z_order="1"></box>
    <polygon label="road" source="manual" occluded="0" points="0,0;30,0;30,20;0,20" z_order="0"></polygon>
    <mask label="car" source="manual" occluded="0" rle="1, 2, 2, 1" left="20" top="10" width="3" height="2" z_order="2"></mask>
    <polyline label="lane" source="manual" occluded="0" points="0.5,15.5;15.5,15.5" z_order="3"></polyline>
    <points label="car" source="manual" occluded="0" points="5,5" z_order="0"></points>
  </image>
</annotations>
"""


def test_cvat_shapes_and_z_order(tmp_path):
    """Written per the CVAT for images 1.1 format description (docs.cvat.ai)."""
    (tmp_path / "annotations.xml").write_text(CVAT_XML)
    _image(tmp_path / "images" / "frame.png", 30, 20)
    with pytest.warns(UserWarning, match="points shapes ignored"):
        layout_ds = open_dataset(f"{tmp_path}?line_width=1", "train")
    names = layout_ds.classes.names
    assert names == ["background", "road", "car", "lane"]
    labels = layout_ds.read_mask(0)
    expected = np.full((20, 30), 1, np.uint8)          # road covers all, drawn first (z 0)
    expected[2:8, 2:10] = 2                             # box above it (z 1) though earlier in the file
    # mask rle "1, 2, 2, 1" in its 3x2 box, row by row: 0 1 1 / 0 0 1 (background keeps the road below)
    expected[10:12, 20:23] = [[1, 2, 2], [1, 1, 2]]
    expected[15, 0:16] = 3                              # 1-px polyline through pixel centres
    assert np.array_equal(labels, expected)


# --------------------------------------------------------------------------- Label Studio
def _ls_encode(values: np.ndarray) -> list[int]:
    """A reference encoder written from the format description (thi-ng rle-pack as Label Studio
    uses it): 32-bit count, 5-bit word size - 1 (8 bits -> 7), run widths 3, 4, 8, 16; each run
    of equal values as flag 1, width index, length - 1, value."""
    bits = f"{len(values):032b}" + f"{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i] and j + 1 - i < 65536:
            j += 1
        n = j - i + 1
        k = next(k for k, s in enumerate((3, 4, 8, 16)) if n <= 2 ** s)
        bits += "1" + f"{k:02b}" + format(n - 1, f"0{(3, 4, 8, 16)[k]}b") + f"{int(values[i]):08b}"
        i = j + 1
    bits += "0" * (-len(bits) % 8)
    return [int(bits[p:p + 8], 2) for p in range(0, len(bits), 8)]


def test_brush_rle_decodes_label_studio_converter_vector():
    # encode_rle([1,1,1,1,2,3,5,6,7,8,4,4,4,4,4,4,4,4]) as published in label-studio-converter's tests/test_brush.py
    published = [0, 0, 0, 18, 57, 27, 252, 96, 32, 1, 0, 6, 0, 40, 0, 192, 3, 128, 17, 56, 32]
    assert labelstudio.decode_brush_rle(published).tolist() == [1, 1, 1, 1, 2, 3, 5, 6, 7, 8] + [4] * 8
    assert labelstudio.decode_brush_rle(_ls_encode(np.array([1, 1, 1, 1, 2, 3, 5, 6, 7, 8] + [4] * 8))).tolist() \
        == [1, 1, 1, 1, 2, 3, 5, 6, 7, 8] + [4] * 8


def test_label_studio_polygons_in_percent_and_brush(tmp_path):
    """A JSON export written per Label Studio's documented result format."""
    w, h = 40, 20
    _image(tmp_path / "photo.png", w, h)
    brush = np.zeros((h, w), bool)
    brush[5:9, 30:36] = True
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[brush] = (255, 0, 0, 179)
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/5f3a1b2c-photo.png"}, "annotations": [{
        "id": 10, "was_cancelled": False, "result": [
            {"id": "p1", "type": "polygonlabels", "from_name": "label", "to_name": "image",
             "original_width": w, "original_height": h, "image_rotation": 0,
             "value": {"points": [[10, 10], [50, 10], [50, 60], [10, 60]], "polygonlabels": ["Sky"]}},
            {"id": "b1", "type": "brushlabels", "from_name": "tag", "to_name": "image",
             "original_width": w, "original_height": h, "image_rotation": 0,
             "value": {"format": "rle", "rle": _ls_encode(rgba.ravel()), "brushlabels": ["Car"]}},
            {"id": "b2", "type": "brushlabels", "original_width": w, "original_height": h,
             "value": {"format": "rle", "rle": _ls_encode(rgba[:10].ravel()), "brushlabels": ["Car"]}},
        ]}]}]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    with pytest.warns(UserWarning, match="RLE size mismatch"):
        ds = open_dataset(tmp_path / "export.json", "all")
    assert ds.classes.names == ["background", "Car", "Sky"]
    labels = ds.read_mask(0)
    expected = np.zeros((h, w), np.uint8)
    expected[2:12, 4:20] = 2          # 10..50 % of 40 px, 10..60 % of 20 px
    expected[brush] = 1
    assert np.array_equal(labels, expected)
    assert "task 1, result b2: RLE size mismatch" in check_data(tmp_path / "export.json").summary()


# --------------------------------------------------------------------------- masks -> annotations -> masks
def _random_layout(root: Path, n: int = 4, size=(48, 64), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.json").write_text(json.dumps({"classes": ["background", "a", "b"], "ignore_index": 255}))
    for i in range(n):
        m = (rng.random((size[0] // 4, size[1] // 4)) * 3).astype(np.uint8)
        m = np.kron(m, np.ones((4, 4), np.uint8))
        m[rng.random(size) < 0.05] = rng.integers(0, 3)  # ragged edges, pinches, single pixels, holes
        m[0, :5] = 255                                    # ignored pixels
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
        _image(root / "images" / f"im{i}.png", size[1], size[0])


@pytest.mark.parametrize("fmt", ["coco", "labelme", "cvat"])
def test_round_trip_is_exact_at_tolerance_zero(tmp_path, fmt):
    _random_layout(tmp_path / "src")
    convert(tmp_path / "src", fmt, tmp_path / fmt)
    convert(tmp_path / fmt, "masks", tmp_path / "back")
    src = open_dataset(tmp_path / "src", "all")
    for spec in (tmp_path / fmt, tmp_path / "back"):
        ds = open_dataset(spec, "all")
        got = {s.name: ds.read_mask(i) for i, s in enumerate(ds.samples)}
        assert len(got) == len(src) == 4
        for i, s in enumerate(src.samples):
            assert np.array_equal(got[s.name], src.read_mask(i)), (spec, s.name)


def test_coco_writes_polygons_on_corners_and_rle_for_holes(tmp_path):
    _random_layout(tmp_path / "src", n=1)
    convert(tmp_path / "src", "coco", tmp_path / "coco")
    files = sorted((tmp_path / "coco" / "annotations").glob("*.json"))  # one per split (a hash split here)
    data = {"annotations": [], "categories": json.loads(files[0].read_text())["categories"]}
    for f in files:
        data["annotations"] += json.loads(f.read_text())["annotations"]
    polys = [a for a in data["annotations"] if isinstance(a["segmentation"], list)]
    rles = [a for a in data["annotations"] if isinstance(a["segmentation"], dict)]
    assert polys and rles
    assert all(float(v).is_integer() for a in polys for p in a["segmentation"] for v in p)
    assert {c["name"] for c in data["categories"]} == {"a", "b", "__ignore__"}  # background = uncovered


def test_tolerance_half_pixel_keeps_large_objects(tmp_path):
    yy, xx = np.mgrid[:120, :160]
    m = np.zeros((120, 160), np.uint8)
    m[(yy - 60) ** 2 / 45 ** 2 + (xx - 70) ** 2 / 60 ** 2 < 1] = 1           # an ellipse
    m[20:90, 120:150] = 2
    m[(xx + yy) % 37 == 0] = 0                                               # a jagged diagonal cut
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.json").write_text(json.dumps({"classes": ["background", "a", "b"]}))
    Image.fromarray(m).save(root / "masks" / "x.png")
    _image(root / "images" / "x.png", 160, 120)
    convert(root, "coco", tmp_path / "coco", tolerance=0.5)
    (ann_file,) = (tmp_path / "coco" / "annotations").glob("*.json")
    oracle = COCO(str(ann_file))  # each object's simplified polygon, rasterised by pycocotools alone
    checked = 0
    for ann in oracle.dataset["annotations"]:
        cls = ann["category_id"] - 1
        drawn = oracle.annToMask(ann) > 0
        for obj in objects(m == cls):
            if obj.mask.sum() >= 1000 and (obj.mask & drawn).sum() > obj.mask.sum() // 2:
                iou = (obj.mask & drawn).sum() / (obj.mask | drawn).sum()
                assert iou >= 0.99, (ann["id"], iou)
                assert isinstance(ann["segmentation"], list)  # simplified, still polygons
                checked += 1
    assert checked >= 3
    exact = sum(len(p) for a in json.loads(ann_file.read_text())["annotations"] for p in a["segmentation"])
    convert(root, "coco", tmp_path / "exact")
    (exact_file,) = (tmp_path / "exact" / "annotations").glob("*.json")
    assert exact < sum(len(p) for a in json.loads(exact_file.read_text())["annotations"] for p in a["segmentation"])


def test_convert_cli(tmp_path):
    _random_layout(tmp_path / "src", n=2)
    proc = subprocess.run(["sh", "-c", 'umask 022 && exec "$0" "$@"', sys.executable, "-m", "pixelwise", "data",
                           "convert", str(tmp_path / "src"), "--to", "cvat", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2 images" in proc.stdout
    assert (tmp_path / "out" / "annotations.xml").is_file()
    assert (tmp_path / "out" / "annotations.xml").stat().st_mode & 0o044 == 0o044  # readable by others, as umask 022 gives
    proc = subprocess.run([sys.executable, "-m", "pixelwise", "data", "convert", str(tmp_path / "src"), "--to",
                           "coco", "--out", str(tmp_path / "o2"), "--tolerance", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "tolerance" in proc.stderr


# --------------------------------------------------------------------------- real data
def _camvid_subset(camvid_dir: Path, root: Path, per_split: int) -> Path:
    shutil.copy(camvid_dir / "classes.json", root / "classes.json") if root.mkdir(parents=True) is None else None
    for split in ("train", "val", "test"):
        for img in sorted((camvid_dir / "images" / split).iterdir())[:per_split]:
            for kind, src in (("images", img), ("masks", camvid_dir / "masks" / split / f"{img.stem}.png")):
                (root / kind / split).mkdir(parents=True, exist_ok=True)
                shutil.copy(src, root / kind / split / src.name)
    return root


def test_training_from_a_coco_layout(tmp_path, camvid_dir):
    from pixelwise.training.config import validate_config
    from pixelwise.training.trainer import train

    src = _camvid_subset(camvid_dir, tmp_path / "src", 2)
    convert(src, "coco", tmp_path / "coco")
    cfg = validate_config({
        "data": {"root": str(tmp_path / "coco"), "crop_size": 64, "batch_size": 2, "val_batch_size": 2},
        "model": {"name": "unet", "kwargs": {"base_channels": 4, "depth": 2}},
        "train": {"epochs": 1, "amp": "off", "channels_last": False, "seed": 0}})
    train(cfg, tmp_path / "run", verbose=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and np.isfinite(rows[-1]["train_loss"]) and "val_miou" in rows[-1]


@pytest.mark.slow
@pytest.mark.timeout(1500)  # all 701 CamVid label maps through COCO and back: minutes of CPU
def test_camvid_masks_to_coco_and_back_are_identical(tmp_path, camvid_dir):
    convert(camvid_dir, "coco", tmp_path / "coco")
    total = 0
    for split in ("train", "val", "test"):
        a, b = open_dataset(camvid_dir, split), open_dataset(tmp_path / "coco", split)
        assert [s.name for s in a.samples] == [s.name for s in b.samples]
        for i in range(len(a)):
            assert np.array_equal(a.read_mask(i), b.read_mask(i)), (split, a.samples[i].name)
            total += 1
    assert total == 701


def test_labels_file_fixes_ids_and_names_unknown_labels(tmp_path):
    """LabelMe files written per labelme's JSON schema, with labelme's labels.txt convention."""
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\ncat\n")
    _image(tmp_path / "a.png", 10, 10)
    shapes = [{"label": "cat", "points": [[0, 0], [4, 0], [4, 4], [0, 4]], "shape_type": "polygon"},
              {"label": "__ignore__", "points": [[6, 6], [8, 8]], "shape_type": "rectangle"},
              {"label": "dog", "points": [[5, 0], [9, 0], [9, 4]], "shape_type": "polygon"},
              {"label": "cat", "points": [[1, 8], [3, 8]], "shape_type": "polygon"}]
    (tmp_path / "a.json").write_text(json.dumps({"version": "5.3.1", "flags": {}, "shapes": shapes,
                                                 "imagePath": "a.png", "imageData": None,
                                                 "imageHeight": 10, "imageWidth": 10}))
    with pytest.warns(UserWarning, match="2 skipped"):
        ds = open_dataset(tmp_path, "all")
    assert ds.classes.names == ["_background_", "cat"]
    labels = ds.read_mask(0)
    expected = np.zeros((10, 10), np.uint8)
    expected[0:4, 0:4] = 1
    expected[6:8, 6:8] = 255
    assert np.array_equal(labels, expected)
    text = check_data(tmp_path).summary()
    assert "a.json: shape 2: unknown category: 'dog' is not in labels.txt" in text
    assert "a.json: shape 3: polygon with fewer than 3 points" in text


def test_data_stats_reads_an_annotation_layout(tmp_path):
    path = _coco_fixture(tmp_path)
    from pixelwise.data.stats import compute_stats

    stats = compute_stats(path, mean_std=False)
    assert stats["layout"] == "coco" and stats["num_classes"] == 4
    for cid, name in enumerate(["background", "car", "cat", "dog"]):
        got = sum(split["pixel_counts"][name] for split in stats["splits"].values())
        assert got == sum(int((m == cid).sum()) for m in _oracle_labels(path).values()), name
