"""Predict many image files into a folder: label PNGs, overlays, probability maps, a CSV.

Layout of OUT:
    labels/NAME.png          palette PNG, pixel = class id (multilabel: bit c = class c; >8 classes: .npy)
    overlays/NAME.png        image blended with the class colours, legend of the classes present
    probs/NAME.npy           float16 (K, H, W)              with probs="npy"
    probs/NAME/IDX_CLASS.png one 8- or 16-bit PNG per class  with probs="png8" / "png16"
    uncertainty/NAME.png     16-bit gray map, 0..65535 = uncertainty 0..1   with uncertainty=METHOD
    uncertainty/NAME.npy     float32 (H, W) in [0, 1]                      (uncertainty_format="npy")
    uncertainty_overlays/NAME.png  the image in gray with the map as heat on top
    class_shares.csv         image, width, height, one column per class: share of pixels
                             (+ uncertainty_METHOD: the image's mean uncertainty)

    .done/NAME.json          written last for each finished input: its CSV row (see sharding.py)

Images are read one by one; same-size images are batched. An unreadable file is skipped
with a message naming it, and listed in the returned report. Every file is written under a
temporary name and renamed into place, so a killed run leaves no half-written output.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from pixelwise import atomic
from pixelwise.data.io import read_image
from pixelwise.errors import DataError, PixelwiseError
from pixelwise.inference.predictor import Prediction, Predictor
from pixelwise.visualize import save_label_png, save_multilabel_png, save_overlay_png

ProbFormat = Literal["npy", "png8", "png16"]


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)        # input files predicted
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input file, problem)
    csv_path: Path | None = None
    skipped: int = 0                                         # already done (resume)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def output_names(paths: Sequence[Path]) -> list[str]:
    """A unique file stem per input (same stem in two folders -> NAME, NAME_2, ...)."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = _safe(path.stem)
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def predict_to_folder(predictor: Predictor, paths: Sequence[Path], out: str | Path, *,
                      probs: ProbFormat | None = None, overlays: bool = True, alpha: float = 0.5,
                      progress: bool = True, names: Sequence[str] | None = None, resume: bool = False,
                      csv_name: str = "class_shares.csv", uncertainty: str | None = None,
                      uncertainty_format: str = "png16") -> PredictReport:
    """Predict every file in `paths` and write the outputs described in the module docstring.

    names: output stems (default: `output_names(paths)`); a sharded run passes the names given
    on the whole input list. Every finished input gets a done marker (OUT/.done/NAME.json);
    with `resume`, inputs already marked are skipped. The CSV is rebuilt from the markers of
    `paths`, so it lists each input exactly once however often the run was interrupted.
    uncertainty: None, "entropy", "margin" or "tta-variance" (pixelwise.inference.uncertainty).
    """
    from pixelwise.inference.sharding import is_done, mark_done, read_done, write_rows_csv

    if probs not in (None, "npy", "png8", "png16"):
        raise PixelwiseError(f"unknown probability format {probs!r}; accepted: npy, png8, png16")
    if probs and predictor.decodes:
        raise PixelwiseError(f"{predictor.source}: the ONNX graph outputs labels only; "
                             "export it without --with-decoding to write probabilities")
    if uncertainty:  # refuse up front, before any file is written
        from pixelwise.inference.uncertainty import check_uncertainty

        check_uncertainty(predictor, uncertainty)
    if uncertainty_format not in ("png16", "npy"):
        raise PixelwiseError(f"unknown uncertainty format {uncertainty_format!r}; accepted: png16, npy")
    out = Path(out)
    for sub in ("labels", "overlays" if overlays else None, "probs" if probs else None,
                "uncertainty" if uncertainty else None, "uncertainty_overlays" if uncertainty and overlays else None):
        if sub:
            (out / sub).mkdir(parents=True, exist_ok=True)
    report = PredictReport(csv_path=out / csv_name)
    names = list(names) if names is not None else output_names(paths)
    todo = [(path, name) for path, name in zip(paths, names) if not (resume and is_done(out, name))]
    report.skipped = len(paths) - len(todo)
    # Temp files of a killed run's writes, never renamed into place: this run's inputs' outputs
    # and done markers, and this run's CSV (other shards' files are left alone: they may be live).
    stale = list(out.glob(f".{csv_name}.*.tmp"))
    for _, name in todo:
        stale += [*out.glob(f"*/.{name}.png.*.tmp"), *out.glob(f"*/.{name}.npy.*.tmp"),
                  *out.glob(f".done/.{name}.json.*.tmp"), *out.glob(f"probs/{name}/.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress or None, file=sys.stderr)
    pending: dict[tuple[int, ...], list[tuple[Path, str, np.ndarray]]] = {}

    def flush(key: tuple[int, ...]) -> None:
        group = pending.pop(key, [])
        if not group:
            return
        if uncertainty:
            from pixelwise.inference.uncertainty import predict_with_uncertainty

            pairs = predict_with_uncertainty(predictor, [img for _, _, img in group], uncertainty)
            preds, umaps = [p for p, _ in pairs], [u for _, u in pairs]
        else:
            preds = predictor.predict([img for _, _, img in group], return_probabilities=probs is not None)
            umaps = [None] * len(preds)
        for (path, name, image), pred, umap in zip(group, preds, umaps):
            write_prediction(predictor, out, name, image, pred, probs, overlays, alpha)
            shares = predictor.class_shares(pred.labels)
            record = {"image": path.as_posix(), "width": int(image.shape[1]),
                      "height": int(image.shape[0]), "shares": [float(v) for v in shares]}
            if umap is not None:
                score = _write_uncertainty(out, name, image, umap, uncertainty_format, overlays)
                record["uncertainty"] = {"method": uncertainty, "mean": score}
            mark_done(out, name, record)
            report.written.append(path)
        bar.update(len(group))

    for path, name in todo:
        try:
            image = read_image(path)
            predictor.preprocess.channels(image[:1, :1], str(path))  # wrong channel count: this file only
        except DataError as exc:
            report.failed.append((path, exc.problem))
            bar.write(f"skipped {path}: {exc.problem}", file=sys.stderr)
            bar.update(1)
            continue
        key = tuple(image.shape)
        pending.setdefault(key, []).append((path, name, image))
        big = image.shape[0] * image.shape[1] > predictor.max_pixels
        if big or len(pending[key]) >= predictor.batch_size:
            flush(key)
    for key in list(pending):
        flush(key)
    bar.close()
    write_rows_csv(report.csv_path, predictor.class_names, read_done(out, names))
    return report


def write_prediction(predictor: Predictor, out: Path, name: str, image: np.ndarray, pred: Prediction,
                     probs: ProbFormat | None = None, overlays: bool = True, alpha: float = 0.5) -> None:
    """Write one image's label map, overlay and probabilities into OUT's subfolders, each atomically."""
    labels = pred.labels
    if labels.ndim == 3:  # multilabel masks
        if labels.shape[0] <= 8:
            save_multilabel_png(out / "labels" / f"{name}.png", labels)
        else:
            atomic.save_npy(out / "labels" / f"{name}.npy", labels)
        present = [c for c in range(labels.shape[0]) if (labels[c] == 1).any()]
    else:
        save_label_png(out / "labels" / f"{name}.png", labels, predictor.colors)
        present = [int(c) for c in np.flatnonzero(predictor.class_counts(labels))]
    if overlays:  # blended and encoded in strips: no full-size copy of the picture (8192^2 RGB: 200 MB each)
        save_overlay_png(out / "overlays" / f"{name}.png", image, labels, predictor.colors, alpha=alpha,
                         ignore_index=None, names=predictor.class_names, present=present)
    if probs and pred.probabilities is not None:
        p = pred.probabilities
        if probs == "npy":
            atomic.save_npy(out / "probs" / f"{name}.npy", p.astype(np.float16))
            return
        folder = out / "probs" / name
        folder.mkdir(parents=True, exist_ok=True)
        channel_names = predictor.class_names if p.shape[0] == len(predictor.class_names) else \
            [predictor.class_names[-1]] if p.shape[0] == 1 else [str(i) for i in range(p.shape[0])]
        for c in range(p.shape[0]):
            if probs == "png8":
                data = np.rint(p[c] * 255).astype(np.uint8)
            else:
                data = np.rint(p[c] * 65535).astype(np.uint16)
            atomic.save_image(folder / f"{c}_{_safe(channel_names[c])}.png", data)


def _write_uncertainty(out: Path, name: str, image: np.ndarray, umap, fmt: str, overlays: bool) -> float:
    """uncertainty/NAME.(png|npy) and uncertainty_overlays/NAME.png; returns the image's mean uncertainty."""
    from pixelwise.inference.uncertainty import heat_overlay, image_score, to_png16

    if fmt == "npy":
        atomic.save_npy(out / "uncertainty" / f"{name}.npy", umap.float().numpy())
    else:
        atomic.save_image(out / "uncertainty" / f"{name}.png", to_png16(umap))
    if overlays:
        atomic.save_image(out / "uncertainty_overlays" / f"{name}.png", heat_overlay(image, umap.numpy()))
    return image_score(umap)
