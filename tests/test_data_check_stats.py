"""`data check` finds every problem without stopping; `data stats` counts exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pixelwise.data.check import check_data, looks_resized
from pixelwise.data.stats import compute_stats
from pixelwise.losses.weights import class_weights_from_counts, median_frequency

RNG = np.random.default_rng(0)


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _blocky_mask(h: int = 32, w: int = 32, n: int = 5) -> np.ndarray:
    small = RNG.integers(0, n, (4, 4)).astype(np.uint8)
    small[0, 0], small[0, 1] = 0, n - 1  # make sure far-apart ids touch
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _classes(root: Path, n: int = 5) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(
        {"classes": [{"id": i, "name": f"c{i}", "color": [i * 40, 0, 0]} for i in range(n)], "ignore_index": 255}))


def _messy_tree(root: Path) -> None:
    _classes(root)
    img = lambda: RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # noqa: E731
    tr_i, tr_m = root / "images" / "train", root / "masks" / "train"
    va_i, va_m = root / "images" / "val", root / "masks" / "val"
    _save(tr_i / "a.png", img()); _save(tr_m / "a.png", _blocky_mask())
    good = (tr_i / "a.png").read_bytes()
    (tr_i / "b.png").write_bytes(good[: len(good) // 2]); _save(tr_m / "b.png", _blocky_mask())      # truncated
    _save(tr_i / "c.png", img()); _save(tr_m / "c.png", _blocky_mask(32, 30))                      # size mismatch
    bad = _blocky_mask(); bad[:3, :3] = 7
    _save(tr_i / "d.png", img()); _save(tr_m / "d.png", bad)                                        # value 7
    _save(tr_i / "e.png", img())                                                                    # no mask
    _save(tr_m / "z.png", _blocky_mask())                                                           # no image
    small = _blocky_mask(16, 16)
    _save(tr_i / "g.png", img()); _save(tr_m / "g.png", cv2.resize(small, (32, 32), interpolation=cv2.INTER_LINEAR))
    (tr_i / "t.png").write_text("not a png"); _save(tr_m / "t.png", _blocky_mask())                 # text as png
    (va_i).mkdir(parents=True); (va_i / "a copy.png").write_bytes(good); _save(va_m / "a copy.png", _blocky_mask())
    _save(va_i / "ünï côde.png", img()); va_m.mkdir(parents=True, exist_ok=True)
    (va_m / "ünï côde.png").write_bytes(b"")                                                        # zero bytes
    os.symlink(va_i / "loop2.png", va_i / "loop.png"); os.symlink(va_i / "loop.png", va_i / "loop2.png")
    _save(va_m / "loop.png", _blocky_mask()); _save(va_m / "loop2.png", _blocky_mask())
    (root / "images" / "test").mkdir(); (root / "masks" / "test").mkdir()                           # empty split


def test_check_reports_every_problem(tmp_path):
    _messy_tree(tmp_path / "d")
    report = check_data(tmp_path / "d")
    found = {(i.kind, Path(i.path).name if i.path else None) for i in report.errors}
    expected = {("unreadable", "b.png"), ("size_mismatch", "c.png"), ("bad_values", "d.png"),
                ("orphan_image", "e.png"), ("orphan_mask", "z.png"), ("resized_mask", "g.png"),
                ("unreadable", "t.png"), ("unreadable", "ünï côde.png"), ("unreadable", "loop.png"),
                ("unreadable", "loop2.png"), ("empty_split", None)}
    assert expected <= found, expected - found
    dup = [i for i in report.errors if i.kind == "duplicate_across_splits"]
    assert len(dup) == 1 and "a copy.png" in dup[0].message and "a.png" in dup[0].message
    assert report.unknown_values == {"7": [str(tmp_path / "d" / "masks" / "train" / "d.png")]}
    assert not any(i.kind == "resized_mask" and Path(i.path).name == "a.png" for i in report.issues)
    assert not report.ok


def test_cli_check_exit_codes_and_json(tmp_path):
    _messy_tree(tmp_path / "bad")
    cmd = [sys.executable, "-m", "pixelwise", "data", "check"]
    res = subprocess.run(cmd + [str(tmp_path / "bad"), "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["num_errors"] >= 11
    text = subprocess.run(cmd + [str(tmp_path / "bad")], capture_output=True, text=True, timeout=120)
    assert text.returncode == 1 and "FAILED" in text.stdout and "d.png" in text.stdout
    good = tmp_path / "good"
    _classes(good)
    for split in ("train", "val"):
        _save(good / "images" / split / "x.png", RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        _save(good / "masks" / split / "x.png", _blocky_mask())
    res = subprocess.run(cmd + [str(good)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "OK: 0 error(s)" in res.stdout
    stats_cmd = [sys.executable, "-m", "pixelwise", "data", "stats", str(good), "--json", "--no-mean-std"]
    res = subprocess.run(stats_cmd, capture_output=True, text=True, timeout=120)
    stats = json.loads(res.stdout)
    assert res.returncode == 0 and stats["splits"]["train"]["images"] == 1 and stats["num_classes"] == 5
    assert abs(sum(stats["splits"]["val"]["pixel_share"].values()) - 1.0) < 1e-5
    res = subprocess.run(cmd + [str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error:") and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_resize_detector_separates_nearest_from_bilinear():
    valid = np.arange(5)
    for _ in range(5):
        small = _blocky_mask(20, 20)
        assert not looks_resized(cv2.resize(small, (57, 43), interpolation=cv2.INTER_NEAREST), valid)
        assert looks_resized(cv2.resize(small, (57, 43), interpolation=cv2.INTER_LINEAR), valid)


def test_stats_hand_computed(tmp_path):
    root = tmp_path / "s"
    _classes(root, 3)
    masks = [np.array([[0, 0], [1, 255]], np.uint8), np.array([[0, 2], [2, 2]], np.uint8)]
    for i, m in enumerate(masks):
        _save(root / "images" / "train" / f"{i}.png", np.full((2, 2), 100 * i, np.uint8))
        _save(root / "masks" / "train" / f"{i}.png", m)
    stats = compute_stats(root)
    share = stats["splits"]["train"]["pixel_share"]
    assert share == {"c0": 0.375, "c1": 0.125, "c2": 0.375, "ignore(255)": 0.125}
    # freq over labelled pixels of the images holding the class (the 255 pixel is left out):
    # c0 3/7 (both images: 3 + 4 labelled), c1 1/3, c2 3/4; median 3/7
    assert stats["class_weights"] == {"c0": 1.0, "c1": round(9 / 7, 4), "c2": round(4 / 7, 4)}
    # ... the weights training computes from the same masks (per-image counts without ignore)
    training = class_weights_from_counts([[2, 1, 0], [1, 0, 3]], "median_frequency")
    assert list(stats["class_weights"].values()) == pytest.approx(training.tolist(), abs=1e-4)
    assert stats["splits"]["train"]["sizes"] == {"2x2": 2}
    assert stats["suggested_task"] == "multiclass" and stats["in_channels"] == 1
    assert np.isclose(stats["mean"][0], 100 / 255 / 2, atol=1e-5) and np.isclose(stats["std"][0], 50 / 255, atol=1e-5)
    assert np.allclose(median_frequency(np.array([2.0, 0.0]), np.array([4.0, 0.0])), [1.0, 0.0])


def test_stats_on_synthetic_wafer_is_multilabel():
    stats = compute_stats("synthetic:wafer?n=6&n_val=2&n_test=2&size=32", mean_std=False)
    assert stats["suggested_task"] == "multilabel" and set(stats["splits"]) == {"train", "val", "test"}
    assert set(stats["splits"]["train"]["positive_share"]) == set(stats["classes"])


def test_camvid_stats_agree_with_its_stats_json(camvid_dir):
    reference = json.loads((camvid_dir / "stats.json").read_text())
    stats = compute_stats(camvid_dir, mean_std=False)
    for split, shares in reference["pixel_share"].items():
        assert stats["splits"][split]["images"] == reference["splits"][split]
        for name, value in shares.items():
            assert abs(stats["splits"][split]["pixel_share"][name] - value) < 6e-5, (split, name)
    assert stats["suggested_task"] == "multiclass"
    w = stats["class_weights"]
    assert w["Bicyclist"] > w["Pole"] > w["Road"]  # rarer class, larger weight


@pytest.mark.slow
def test_real_data_checks_clean(camvid_dir, isbi_dir):
    for root in (camvid_dir, isbi_dir):
        report = check_data(root)
        assert report.ok, report.summary()
