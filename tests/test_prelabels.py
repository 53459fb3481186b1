"""Pre-labels out: `pixelwise predict --format labelme|coco|cvat|labelstudio`.

Every written file is read back with pixelwise's own annotation readers (the issue-16 layouts),
which must give the predicted label map again, pixel for pixel. The model is a fixed colour
classifier, so the prediction (objects with holes, a diagonal pinch, objects inside holes)
and its probabilities are known in advance; scores are checked against means computed here
over masks drawn by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from pixelwise.data.annotations import labelstudio, scan_annotation_layout
from pixelwise.data.annotations.model import ClassMap
from pixelwise.data.annotations.rasterise import render
from pixelwise.inference import Predictor
from pixelwise.inference.prelabels import write_prelabels
from pixelwise.tasks import Task

NAMES = ["background", "cell", "nucleus"]
COLOURS = np.array([[200, 40, 0], [0, 230, 10], [30, 0, 160]], np.uint8)   # RGB of each class's pixels


class ColourModel(torch.nn.Module):
    """Logits = 8 * RGB on the 0..1 scale: each class's colour has its class as the largest
    channel, and a softmax below 1 that differs per class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * x


def design() -> np.ndarray:
    """A label map with what pre-labels must keep: a ring with a hole holding a nucleus and
    background, a plain square, two nucleus pixels touching only at a corner."""
    lab = np.zeros((40, 52), np.uint8)
    lab[4:20, 4:24] = 1            # cell ring ...
    lab[8:16, 8:20] = 0            # ... its hole (background)
    lab[10:14, 10:14] = 2          # a nucleus inside the hole
    lab[25:35, 30:45] = 1          # a plain cell
    lab[28:31, 33:36] = 2          # a nucleus inside it (the cell gets a hole filled by class 2)
    lab[2, 40] = lab[3, 41] = 2    # diagonal pinch: two 4-connected objects
    return lab


def softmax_max(rgb: np.ndarray) -> np.ndarray:
    z = 8.0 * rgb.astype(np.float64) / 255.0
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).max(-1)


@pytest.fixture
def predictor() -> Predictor:
    return Predictor.from_model(ColourModel(), Task("multiclass", num_classes=3), mean=[0, 0, 0], std=[1, 1, 1],
                                class_names=NAMES, device="cpu", precision="fp32")


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    lab = design()
    first = tmp_path / "in" / "first.png"
    first.parent.mkdir()
    Image.fromarray(COLOURS[lab]).save(first)
    second = tmp_path / "in" / "second.jpg"   # another size, a lossy format: whatever it predicts must come back
    rng = np.random.default_rng(1)
    Image.fromarray(COLOURS[rng.integers(0, 3, (23, 31))]).save(second, quality=60)
    return [first, second]


def _predicted(predictor: Predictor, path: Path) -> np.ndarray:
    return predictor.predict_file(path)[1].labels


@pytest.mark.parametrize("fmt", ["labelme", "coco", "cvat"])
def test_prelabels_read_back_as_the_predicted_label_maps(tmp_path, predictor, images, fmt):
    out = tmp_path / fmt
    report = write_prelabels(predictor, images, out, fmt, progress=False)
    assert report.written == images and not report.failed
    assert np.array_equal(_predicted(predictor, images[0]), design())  # the model does what the test assumes
    layout = scan_annotation_layout(report.csv_path)
    assert not layout.problems, layout.problems
    assert layout.classes.names == NAMES   # classes.json written beside: the checkpoint's ids
    samples = {s.name: s for split in layout.splits.values() for s in split}
    assert sorted(samples) == ["first", "second"]
    for path in images:
        mask = samples[path.stem].mask_path
        assert np.array_equal(mask.render_mask(), _predicted(predictor, path)), (fmt, path.name)


def test_coco_prelabels_score_each_object_and_keep_holes_as_rle(tmp_path, predictor, images):
    report = write_prelabels(predictor, images[:1], tmp_path / "coco", "coco", progress=False)
    data = json.loads(report.csv_path.read_text())
    assert [c["name"] for c in data["categories"]] == ["cell", "nucleus"]
    anns = data["annotations"]
    assert len(anns) == 6   # 2 cells, 4 nuclei (the corner-touching pair is two)
    conf = softmax_max(COLOURS[design()])
    lab = design()
    expected = {}   # bbox -> hand-drawn object mask
    ring = lab == 1
    ring[25:, :] = False
    square = lab == 1
    square[:25, :] = False
    for m in (ring, square):
        ys, xs = np.nonzero(m)
        expected[(xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)] = m
    for y, x, h, w in ((10, 10, 4, 4), (28, 33, 3, 3), (2, 40, 1, 1), (3, 41, 1, 1)):
        m = np.zeros_like(ring)
        m[y:y + h, x:x + w] = True
        expected[(x, y, w, h)] = m
    for ann in anns:
        m = expected[tuple(int(v) for v in ann["bbox"])]
        assert ann["score"] == pytest.approx(conf[m].mean(), abs=1e-5)
        seg = ann["segmentation"]
        decoded = coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode()}) if isinstance(seg, dict) \
            else coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(seg, 40, 52)))
        assert np.array_equal(decoded.astype(bool), m)   # pycocotools, the oracle, agrees
        assert isinstance(seg, dict) == (m is ring or m is square)   # holes -> RLE, the rest polygons
    cell_scores = {round(a["score"], 4) for a in anns if a["category_id"] == 2}
    assert len(cell_scores) == 1 and cell_scores != {round(a["score"], 4) for a in anns if a["category_id"] == 3}


def test_labelme_prelabels_mask_shapes_for_holes_and_scores_in_description(tmp_path, predictor, images):
    write_prelabels(predictor, images[:1], tmp_path / "lm", "labelme", progress=False)
    data = json.loads((tmp_path / "lm" / "first.json").read_text())
    assert data["imagePath"] == "first.png" and (tmp_path / "lm" / "first.png").is_file()
    kinds = sorted((s["label"], s["shape_type"]) for s in data["shapes"])
    assert kinds == [("cell", "mask"), ("cell", "mask")] + [("nucleus", "polygon")] * 4
    conf = softmax_max(COLOURS[design()])
    nucleus = conf[design() == 2][0]
    assert {s["description"] for s in data["shapes"] if s["label"] == "nucleus"} == {f"score {nucleus:.3f}"}


def test_cvat_prelabels_masks_for_holes(tmp_path, predictor, images):
    import xml.etree.ElementTree as ET

    report = write_prelabels(predictor, images[:1], tmp_path / "cvat", "cvat", progress=False)
    root = ET.parse(report.csv_path).getroot()
    assert [e.text for e in root.iterfind("./meta/task/labels/label/name")] == ["cell", "nucleus"]
    image = root.find("image")
    assert image.get("name") == "first.png" and (tmp_path / "cvat" / "images" / "first.png").is_file()
    assert sorted((e.tag, e.get("label")) for e in image) == [("mask", "cell")] * 2 + [("polygon", "nucleus")] * 4


def test_labelstudio_prelabels_are_predictions_the_reader_gives_back(tmp_path, predictor, images):
    out = tmp_path / "ls"
    report = write_prelabels(predictor, images, out, "labelstudio", image_url="http://files.example/img/",
                             progress=False)
    tasks = json.loads(report.csv_path.read_text())
    assert [t["data"]["image"] for t in tasks] == ["http://files.example/img/first.png",
                                                   "http://files.example/img/second.jpg"]
    first = tasks[0]["predictions"][0]
    assert "annotations" not in tasks[0]   # predictions, not finished annotations: a labeller reviews them
    types = sorted((r["type"], r["value"].get("polygonlabels", r["value"].get("brushlabels"))[0])
                   for r in first["result"])
    assert types == [("brushlabels", "cell")] * 2 + [("polygonlabels", "nucleus")] * 4
    conf = softmax_max(COLOURS[design()])
    assert first["score"] == pytest.approx(conf.mean(), abs=1e-5)
    nucleus = conf[design() == 2][0]
    assert all(r["score"] == pytest.approx(nucleus, abs=1e-5) for r in first["result"] if r["type"] == "polygonlabels")
    # the label config written beside names the controls the results use
    config = (out / "label_config.xml").read_text()
    assert '<PolygonLabels name="label" toName="image"' in config and '<BrushLabels name="brush"' in config
    # The reader takes finished annotations (an export); the same results as an annotation must
    # give the predicted label maps back.
    as_export = [{**t, "annotations": [{"id": 1, "result": t["predictions"][0]["result"]}]} for t in tasks]
    aset = labelstudio.read(report.csv_path, as_export, ClassMap.from_file(out / "classes.json"), [out / "images"])
    assert not aset.errors, aset.errors
    assert len(aset.images) == 2
    for img, path in zip(aset.images, images):
        assert np.array_equal(render(img, 0), _predicted(predictor, path)), path.name


def test_brush_rle_encoder_hand_computed_and_through_the_decoder():
    # 8 values: 4 x 0 then 4 x 255. Header: count 8 (32 bits), word size 8 -> 7 (5 bits), run
    # widths 3, 4, 8, 16 -> 2, 3, 7, 15 (4 bits each); runs: flag 1, width index 00, length-1 = 3
    # in 3 bits, value in 8 bits; zero padding to a byte.
    bits = f"{8:032b}" + "00111" + "0010" + "0011" + "0111" + "1111" + "1" "00" "011" "00000000" \
        + "1" "00" "011" "11111111" + "0" * 7
    assert labelstudio.encode_brush_rle(np.array([0] * 4 + [255] * 4)) == \
        [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]
    rng = np.random.default_rng(0)
    runs = np.repeat(rng.integers(0, 256, 40).astype(np.uint8), rng.integers(1, 9000, 40))
    long_run = np.zeros(70_000 * 4 + 3, np.uint8)   # over 2**16: split into several blocks
    for values in (runs, long_run, np.zeros(0, np.uint8), rng.integers(0, 256, 50).astype(np.uint8)):
        assert np.array_equal(labelstudio.decode_brush_rle(labelstudio.encode_brush_rle(values)), values)


def test_predict_cli_writes_prelabels_and_refuses_multilabel(tmp_path, images):
    from test_predictor import make_checkpoint

    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=3))
    out = tmp_path / "coco"
    proc = subprocess.run([sys.executable, "-m", "pixelwise", "predict", str(tmp_path / "m.pt"), str(images[0].parent),
                           "--out", str(out), "--format", "coco", "--device", "cpu", "--precision", "fp32",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pre-labelled 2 image(s) as coco" in proc.stdout
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    layout = scan_annotation_layout(out / "annotations.json")
    samples = {s.name: s for split in layout.splits.values() for s in split}
    for path in images:
        assert np.array_equal(samples[path.stem].mask_path.render_mask(), _predicted(predictor, path))
    assert not (out / "labels").exists()   # the PNG outputs are the other --format

    make_checkpoint(tmp_path / "ml.pt", Task("multilabel", num_classes=3))
    proc = subprocess.run([sys.executable, "-m", "pixelwise", "predict", str(tmp_path / "ml.pt"), str(images[0]),
                           "--out", str(tmp_path / "ml"), "--format", "labelme", "--device", "cpu", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "error:" in proc.stderr and "multilabel" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_labels_only_model_writes_no_scores_but_the_same_objects(tmp_path, predictor, images):
    """An ONNX graph exported with decoding returns labels, no probabilities: no scores to give."""
    import dataclasses

    def labels_only(batch: torch.Tensor) -> torch.Tensor:
        return (8.0 * batch).argmax(1)

    decoding = dataclasses.replace(predictor, model_fn=labels_only, decodes=True)
    report = write_prelabels(decoding, images[:1], tmp_path / "coco", "coco", progress=False)
    anns = json.loads(report.csv_path.read_text())["annotations"]
    assert len(anns) == 6 and not any("score" in a for a in anns)
    layout = scan_annotation_layout(report.csv_path)
    (sample,) = [s for split in layout.splits.values() for s in split]
    assert np.array_equal(sample.mask_path.render_mask(), design())


def test_confidence_is_the_probability_of_the_predicted_class():
    from pixelwise.inference.predictor import Prediction
    from pixelwise.inference.prelabels import confidence_map

    binary = Prediction(np.array([[0, 1]], np.uint8), np.array([[[0.2, 0.9]]], np.float32))   # sigmoid of foreground
    assert np.allclose(confidence_map(binary, "binary"), [[0.8, 0.9]])
    multi = Prediction(np.array([[2]], np.uint8), np.array([[[0.1]], [[0.3]], [[0.6]]], np.float32))
    assert np.allclose(confidence_map(multi, "multiclass"), [[0.6]])
    assert confidence_map(Prediction(np.zeros((1, 1), np.uint8)), "multiclass") is None


def test_brush_rle_of_a_crop_equals_the_whole_image_encoding():
    """brush_rle finds runs inside an object's box; it must equal encoding the full RGBA bytes."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        h, w = rng.integers(1, 14, 2)
        m = rng.random((h, w)) < rng.random()
        full = labelstudio.encode_brush_rle(np.repeat(m.ravel().astype(np.uint8) * 255, 4))
        assert labelstudio.brush_rle(m) == full
        ys, xs = np.nonzero(m)
        if len(ys):
            y0, x0 = ys.min(), xs.min()
            crop = m[y0:ys.max() + 1, x0:xs.max() + 1]
            assert labelstudio.brush_rle(crop, (int(x0), int(y0)), (int(h), int(w))) == full


@pytest.mark.parametrize("fmt", ["labelme", "coco"])
def test_prelabels_never_overwrite_annotation_files(tmp_path, predictor, images, fmt):
    from pixelwise.errors import ConfigError

    out = tmp_path / fmt
    report = write_prelabels(predictor, images, out, fmt, progress=False)
    corrected = out / "first.json" if fmt == "labelme" else report.csv_path
    corrected.write_text(corrected.read_text() + "\n", encoding="utf-8")   # stands for a labeller's edit
    before = corrected.read_bytes()
    with pytest.raises(ConfigError, match="never overwrite"):
        write_prelabels(predictor, images, out, fmt, progress=False)
    assert corrected.read_bytes() == before
