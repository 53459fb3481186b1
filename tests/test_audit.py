"""Label-error audit: the confident-learning rules on hand-computed tables, the held-out run
mode, and (slow) a K-fold audit that must find deliberately corrupted labels."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.audit.scoring import (Disagreement, ThresholdAccumulator, confident_disagreement, image_score,
                                     regions, two_class)

PIXELWISE = [sys.executable, "-m", "pixelwise"]


def _table():
    # Pixels (columns): class probabilities and the given label.
    probs = np.array([
        [0.8, 0.6, 0.2, 0.1, 0.3, 0.05],
        [0.1, 0.3, 0.7, 0.85, 0.3, 0.9],
        [0.1, 0.1, 0.1, 0.05, 0.4, 0.05],
    ])[:, None, :]                                   # (K=3, H=1, W=6)
    labels = np.array([[0, 0, 1, 0, 2, 255]])
    return probs, labels


def test_thresholds_are_mean_self_confidence():
    probs, labels = _table()
    acc = ThresholdAccumulator(3)
    acc.add(probs, labels)
    # t0 = mean p0 over pixels labelled 0 = (.8 + .6 + .1) / 3; t1 = .7; t2 = .4; the ignored pixel counts nowhere.
    np.testing.assert_allclose(acc.thresholds(), [0.5, 0.7, 0.4])
    assert acc.counts.tolist() == [3, 1, 1]
    empty = ThresholdAccumulator(4)
    empty.add(probs, labels)
    assert np.isinf(empty.thresholds()[3])  # never labelled: never suggested


def test_confident_disagreement_hand_table():
    probs, labels = _table()
    d = confident_disagreement(probs, labels, np.array([0.5, 0.7, 0.4]))
    # Only pixel 3: labelled 0, but class 1 clears its bar (.85 >= .7) and class 0 does not (.1 < .5).
    assert d.flagged.tolist() == [[False, False, False, True, False, False]]
    assert d.suggested[0, 3] == 1
    assert d.margin[0, 3] == pytest.approx(0.75) and d.margin.sum() == pytest.approx(0.75)
    assert d.labelled == 5
    assert image_score(d) == pytest.approx(0.75 / 5)
    # Pixel 1 (p0 .6 >= .5, label 0) agrees although class 1 has .3: below its threshold.
    # With a lower bar for class 1 the model's .3 becomes confident but still loses to class 0's .6.
    lowered = confident_disagreement(probs, labels, np.array([0.5, 0.25, 0.4]))
    assert not lowered.flagged[0, 1]


def test_regions_are_connected_components_ranked_by_score():
    flagged = np.zeros((6, 8), bool)
    flagged[0:2, 0:2] = True           # 4 pixels, margin .5 -> score 2
    flagged[4:6, 4:8] = True           # 8 pixels, margin .9 -> score 7.2
    margin = np.where(flagged, 0.5, 0.0)
    margin[4:6, 4:8] = 0.9
    suggested = np.where(flagged, 2, 0)
    labels = np.zeros((6, 8), np.uint8)
    labels[4:6, 4:8] = 1
    found = regions(Disagreement(flagged, suggested, margin, 48), labels)
    assert [(r.pixels, r.label, r.suggested) for r in found] == [(8, 1, 2), (4, 0, 2)]
    assert found[0].score == pytest.approx(7.2) and found[0].bbox == (4, 4, 4, 2)
    assert [r.pixels for r in regions(Disagreement(flagged, suggested, margin, 48), labels, min_pixels=5)] == [8]


def test_binary_two_class():
    p = np.array([[[0.2, 0.9]]])
    np.testing.assert_allclose(two_class(p)[:, 0, :], [[0.8, 0.1], [0.2, 0.9]])


def _checkpoint(path: Path, data: str) -> None:
    from pixelwise.models import create_model
    from pixelwise.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"num_classes": 5, "base_channels": 4, "depth": 2}
    save_checkpoint(path, {
        "model": {"name": "unet", "kwargs": kwargs}, "task": {"kind": "multiclass", "num_classes": 5},
        "classes": {"names": ["background", "circle", "square", "triangle", "star"], "colors": [[i * 50] * 3 for i in range(5)]},
        "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3, "in_channels": 3},
        "config": {"data": {"root": data, "train_split": "train"}},
        "state_dict": create_model("unet", **kwargs).state_dict(),
    })


def test_run_mode_audits_held_out_split_and_refuses_the_training_split(tmp_path):
    data = "synthetic:shapes?n=4&n_val=5&n_test=2&size=32"
    run = tmp_path / "run"
    _checkpoint(run / "checkpoints" / "best.pt", data)
    refused = subprocess.run([*PIXELWISE, "data", "audit", str(run), "--split", "train", "--out", str(tmp_path / "r")],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "error:" in refused.stderr and "memorised" in refused.stderr
    out = tmp_path / "audit"
    proc = subprocess.run([*PIXELWISE, "data", "audit", str(run), "--out", str(out), "--device", "cpu", "--top", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "held-out" in proc.stderr
    rows = list(csv.DictReader((out / "images.csv").open()))
    assert len(rows) == 5 and [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert len(list((out / "gallery").glob("*.png"))) == 2
    assert "Likely label errors" in (out / "index.html").read_text()
    meta = json.loads((out / "audit.json").read_text())
    assert meta["images"] == 5 and set(meta["thresholds"]) == {"background", "circle", "square", "triangle", "star"}


def _corrupted_shapes(root: Path, n: int = 40, corrupt: int = 10, size: int = 48, seed: int = 7) -> dict[str, str]:
    """A folder data set of synthetic shapes where `corrupt` masks are wrong on purpose:
    the largest shape erased, its class swapped, or the whole mask shifted by 4 pixels."""
    from pixelwise.data.synthetic import SHAPE_CLASSES, SHAPE_COLORS, render_shapes, shape_pixels

    for sub in ("images/train", "masks/train"):
        (root / sub).mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps({"classes": [
        {"id": i, "name": name, "color": list(color)} for i, (name, color) in enumerate(zip(SHAPE_CLASSES, SHAPE_COLORS))]}))
    rng = np.random.default_rng(seed)
    picks = [int(i) for i in rng.choice(n, size=corrupt, replace=False)]
    corrupted = {}
    for i in range(n):
        image, mask, specs = render_shapes(seed, i, size=size)
        name = f"img{i:03d}"
        if i in picks:
            kind = ("erase", "swap", "shift")[picks.index(i) % 3]
            visible = [(mask == s.class_id) & shape_pixels(s, size) for s in specs]
            j = int(np.argmax([v.sum() for v in visible]))
            if kind == "erase":
                mask[visible[j]] = 0
            elif kind == "swap":
                # To the class of the opposite hue band: a swap between neighbouring bands, whose
                # colours overlap, is ambiguous even to a person looking at the image.
                mask[visible[j]] = (specs[j].class_id + 1) % 4 + 1
            else:
                mask = np.roll(mask, (4, 4), axis=(0, 1))
            corrupted[name] = kind
        Image.fromarray(image).save(root / "images" / "train" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / "train" / f"{name}.png")
    return corrupted


@pytest.mark.slow
def test_kfold_audit_finds_corrupted_labels(tmp_path):
    corrupted = _corrupted_shapes(tmp_path / "data")
    out = tmp_path / "audit"
    proc = subprocess.run([*PIXELWISE, "data", "audit", str(tmp_path / "data"), "--folds", "3", "--out", str(out),
                           "--model", "fullres_cnn", "--model-kwargs", '{"depth": 4, "width": 16}', "--epochs", "25",
                           "--crop-size", "48", "--device", "cpu", "--top", "12"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "images.csv").open()))
    assert len(rows) == 40
    top = [r["image"] for r in rows[: len(corrupted)]]
    recall = sum(name in corrupted for name in top) / len(corrupted)
    assert recall >= 0.8, (recall, top, corrupted)
    # Every kind of corruption is among the flagged images, and the regions name a suggested class.
    assert {corrupted[n] for n in top if n in corrupted} == {"erase", "swap", "shift"}
    regions_rows = list(csv.DictReader((out / "regions.csv").open()))
    assert regions_rows and all(r["label"] != r["suggested"] for r in regions_rows)
    assert len(list((out / "gallery").glob("*.png"))) == 12
