"""Predictions as files labelling tools import: pre-labels a labeller corrects instead of drawing.

`write_prelabels(predictor, paths, out, fmt)` predicts every image and writes, into OUT:

    labelme       NAME.json beside NAME.<ext> (one LabelMe file per image)
    coco          annotations.json (+ a `score` per annotation), images/NAME.<ext>
    cvat          annotations.xml (CVAT for images 1.1), images/NAME.<ext>
    labelstudio   tasks.json (tasks with `predictions`), label_config.xml, images/NAME.<ext>
    all           classes.json: the checkpoint's class table, so pixelwise reads the files back
                  with the same class ids

An annotation file that already exists is never overwritten (it may hold a labeller's
corrections): the run stops before predicting anything.

Every 4-connected object of every class except background becomes one annotation, traced by
the annotation writers of `pixelwise.data.annotations` (vertices on pixel corners, so reading
the file back gives the predicted label map exactly). Objects with holes go out in the form
each format has for them: COCO RLE, a CVAT mask, a LabelMe mask shape, a Label Studio brush.
Confidence of an object: the mean, over its pixels, of the probability of the predicted
class (COCO `score`, Label Studio `score`, LabelMe `description`; CVAT has no field for it).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from pixelwise import atomic
from pixelwise.data.annotations.model import fill_class
from pixelwise.data.classes import ClassTable
from pixelwise.data.io import read_image
from pixelwise.errors import ConfigError, DataError
from pixelwise.inference.outputs import PredictReport, output_names
from pixelwise.inference.predictor import Prediction, Predictor

FORMATS = ("labelme", "coco", "cvat", "labelstudio")
# Label Studio names of the controls in the written label_config.xml and tasks.json
LS_POLYGONS, LS_BRUSH, LS_IMAGE = "label", "brush", "image"
LS_DEFAULT_IMAGE_URL = "/data/local-files/?d=images/"


def confidence_map(prediction: Prediction, kind: str) -> np.ndarray | None:
    """(H, W) probability of the predicted class; None when the model gave no probabilities."""
    p = prediction.probabilities
    if p is None:
        return None
    if kind == "binary" and p.shape[0] == 1:  # sigmoid of the foreground
        return np.maximum(p[0], 1.0 - p[0]).astype(np.float32)
    return p.max(axis=0).astype(np.float32)


def object_scores(labels: np.ndarray, cls: int, confidence: np.ndarray) -> list[tuple[float, tuple[int, ...]]]:
    """(mean confidence, bbox x, y, w, h) of each 4-connected object of class `cls`, in the
    order `polygons.objects` returns them (both number OpenCV's components the same way; the
    writers below check the bboxes, so a change there fails loudly instead of mislabelling)."""
    n, comp, stats, _ = cv2.connectedComponentsWithStats((labels == cls).astype(np.uint8), connectivity=4)
    sums = np.bincount(comp.ravel(), weights=confidence.ravel().astype(np.float64), minlength=n)
    return [(float(sums[i] / stats[i, 4]), tuple(int(v) for v in stats[i, :4])) for i in range(1, n)]


def _check(expected: tuple[int, ...], got: tuple[int, ...], what: str) -> None:
    if tuple(expected) != tuple(got):
        raise RuntimeError(f"internal: scores and objects out of step for {what} ({expected} != {got})")


def _write_json(path: Path, data: Any) -> None:
    atomic.write_text(path, json.dumps(data))


class _Writer:
    """Collects one format's annotations image by image; `finish` writes the files."""

    def __init__(self, fmt: str, out: Path, classes: ClassTable, model_version: str, image_url: str | None):
        self.fmt, self.out, self.classes, self.model_version = fmt, out, classes, model_version
        self.fill = fill_class(classes)
        self.names = list(classes.names)
        self.written = [c for c in range(classes.num_classes) if c != self.fill]  # classes that become objects
        self.image_url = LS_DEFAULT_IMAGE_URL if image_url is None else image_url
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.tasks: list[dict] = []
        self.cvat = ET.Element("annotations")
        ET.SubElement(self.cvat, "version").text = "1.1"
        labels_el = ET.SubElement(ET.SubElement(ET.SubElement(self.cvat, "meta"), "task"), "labels")
        for c in self.written:
            ET.SubElement(ET.SubElement(labels_el, "label"), "name").text = self.names[c]

    def add(self, path: Path, name: str, labels: np.ndarray, confidence: np.ndarray | None) -> None:
        h, w = labels.shape
        file_name = f"{name}{path.suffix.lower()}"
        if self.fmt == "labelme":
            atomic.place_file(path, self.out / file_name)
            _write_json(self.out / f"{name}.json", {
                "version": "5.3.1", "flags": {}, "shapes": self._labelme_shapes(labels, confidence),
                "imagePath": file_name, "imageData": None, "imageHeight": h, "imageWidth": w})
            return
        atomic.place_file(path, self.out / "images" / file_name)
        if self.fmt == "coco":
            self._coco(labels, confidence, file_name)
        elif self.fmt == "cvat":
            from pixelwise.data.annotations.cvat import image_element

            image_element(self.cvat, len(self.images), file_name, labels, self.names, {self.fill}, 0.0, None)
            self.images.append({"file_name": file_name})
        else:
            from pixelwise.data.annotations.labelstudio import regions

            result = regions(labels, {c: self.names[c] for c in self.written}, polygons=LS_POLYGONS,
                             brush=LS_BRUSH, to_name=LS_IMAGE, confidence=confidence)
            prediction: dict[str, Any] = {"model_version": self.model_version, "result": result}
            if confidence is not None:  # the task's score: how sure the model is over the whole image
                prediction["score"] = round(float(confidence.mean()), 6)
            self.tasks.append({"id": len(self.tasks) + 1, "data": {LS_IMAGE: self.image_url + file_name},
                               "predictions": [prediction]})

    def _labelme_shapes(self, labels: np.ndarray, confidence: np.ndarray | None) -> list[dict]:
        from pixelwise.data.annotations.labelme import shapes_for

        shapes = shapes_for(labels, self.names, {self.fill}, 0.0)
        if confidence is not None:  # LabelMe has no score field: the free-text description shows it
            by_label: dict[str, list[dict]] = {}
            for s in shapes:
                by_label.setdefault(s["label"], []).append(s)
            for cls in np.unique(labels).tolist():
                if cls == self.fill:
                    continue
                group = by_label.get(self.names[cls], [])
                scores = object_scores(labels, cls, confidence)
                _check((len(scores),), (len(group),), f"LabelMe class {self.names[cls]!r}")
                for s, (score, bbox) in zip(group, scores):
                    _check(bbox[:2], tuple(int(v) for v in np.min(s["points"], axis=0)), "a LabelMe shape")
                    s["description"] = f"score {score:.3f}"
        return shapes

    def _coco(self, labels: np.ndarray, confidence: np.ndarray | None, file_name: str) -> None:
        from pixelwise.data.annotations.coco import annotations_for

        image_id = len(self.images) + 1
        h, w = labels.shape
        self.images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        cats = {c: c + 1 for c in self.written}
        anns = annotations_for(labels, image_id, len(self.annotations) + 1, cats, 0.0)
        if confidence is not None:
            for cls, cat in cats.items():
                group = [a for a in anns if a["category_id"] == cat]
                scores = object_scores(labels, cls, confidence) if group else []
                _check((len(scores),), (len(group),), f"COCO category {cat}")
                for ann, (score, bbox) in zip(group, scores):
                    _check(bbox, tuple(int(v) for v in ann["bbox"]), f"COCO annotation {ann['id']}")
                    ann["score"] = round(score, 6)
        self.annotations += anns

    def finish(self) -> Path:
        """Write the format's collected file(s) and classes.json; returns the main file."""
        classes = {"classes": [{"id": i, "name": n, "color": list(c)}
                               for i, (n, c) in enumerate(zip(self.classes.names, self.classes.colors))],
                   "ignore_index": self.classes.ignore_index, "task": self.classes.task}
        atomic.write_json(self.out / "classes.json", classes, indent=1)
        if self.fmt == "labelme":
            return self.out
        if self.fmt == "coco":
            target = self.out / "annotations.json"
            _write_json(target, {
                "info": {"description": f"pixelwise predictions ({self.model_version})"},
                "images": self.images, "annotations": self.annotations,
                "categories": [{"id": c + 1, "name": self.names[c], "supercategory": ""} for c in self.written]})
            return target
        if self.fmt == "cvat":
            target = self.out / "annotations.xml"
            ET.indent(self.cvat)
            atomic.write_with(target, lambda f: ET.ElementTree(self.cvat).write(f, encoding="utf-8", xml_declaration=True))
            return target
        atomic.write_text(self.out / "label_config.xml", label_config([self.names[c] for c in self.written]))
        target = self.out / "tasks.json"
        _write_json(target, self.tasks)
        return target


def label_config(names: Sequence[str]) -> str:
    """A Label Studio labelling config matching the written tasks: polygons and brushes with
    the same labels (brushes carry the objects with holes)."""
    from xml.sax.saxutils import quoteattr

    labels = "".join(f"\n    <Label value={quoteattr(n)}/>" for n in names)
    return (f'<View>\n  <Image name="{LS_IMAGE}" value="${LS_IMAGE}" zoom="true"/>\n'
            f'  <PolygonLabels name="{LS_POLYGONS}" toName="{LS_IMAGE}" strokeWidth="2">{labels}\n  </PolygonLabels>\n'
            f'  <BrushLabels name="{LS_BRUSH}" toName="{LS_IMAGE}">{labels}\n  </BrushLabels>\n</View>\n')


def write_prelabels(predictor: Predictor, paths: Sequence[Path], out: str | Path, fmt: str, *,
                    image_url: str | None = None, progress: bool = True) -> PredictReport:
    """Predict every image in `paths` and write them as `fmt` annotations into `out` (see the
    module docstring). Unreadable images are skipped and listed in the report."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown pre-label format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if predictor.task.kind == "multilabel":
        raise ConfigError(f"{predictor.source}: a multilabel model gives each pixel several classes; "
                          f"{fmt} pre-labels hold one class per pixel (use the PNG outputs instead)")
    out = Path(out)
    names = output_names(paths)
    targets = [out / f"{n}.json" for n in names] if fmt == "labelme" else \
        [out / {"coco": "annotations.json", "cvat": "annotations.xml", "labelstudio": "tasks.json"}[fmt]]
    existing = [t for t in targets if t.exists()]
    if existing:  # it may hold a labeller's corrections: never overwrite it
        raise ConfigError(f"{existing[0]} exists{f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''}; "
                          "pre-labels never overwrite annotation files (they may hold corrections): "
                          "choose another --out or remove them")
    out.mkdir(parents=True, exist_ok=True)
    colors = list(predictor.colors) + [(0, 0, 0)] * max(0, len(predictor.class_names) - len(predictor.colors))
    classes = ClassTable(list(predictor.class_names), colors[:len(predictor.class_names)],
                         predictor.task.ignore_index, predictor.task.kind)
    writer = _Writer(fmt, out, classes, f"pixelwise-{Path(predictor.source).stem or 'model'}", image_url)
    report = PredictReport()
    from tqdm import tqdm

    with_probs = not predictor.decodes  # an ONNX graph with decoding gives labels only: no scores
    for path, name in tqdm(list(zip(paths, names)), desc=f"pre-label ({fmt})", unit="img",
                           disable=not progress or None, file=sys.stderr):
        try:
            image = read_image(path)
            predictor.preprocess.channels(image[:1, :1], str(path))  # wrong channel count: this file only
        except DataError as exc:
            report.failed.append((path, exc.problem))
            continue
        prediction = predictor.predict(image, return_probabilities=with_probs)
        writer.add(path, name, prediction.labels, confidence_map(prediction, predictor.task.kind))
        report.written.append(path)
    report.csv_path = writer.finish()
    return report
