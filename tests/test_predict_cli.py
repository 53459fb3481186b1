"""`pixelwise predict` and `pixelwise export` as real subprocesses on real files."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.inference import Predictor
from pixelwise.tasks import Task
from test_predictor import make_checkpoint

PIXELWISE = [sys.executable, "-m", "pixelwise"]


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*PIXELWISE, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Two same-size RGB images, another size, a gray one, a truncated PNG, a text file."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "b.png")
    Image.fromarray(rng.integers(0, 256, (23, 71, 3), dtype=np.uint8)).save(folder / "sub" / "c.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(folder / "gray.png")
    good = (folder / "a.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.png").write_text("this is not an image\n")
    return folder


def test_predict_writes_labels_overlays_probs_csv_and_reports_bad_files(tmp_path, inputs):
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=4))
    out = tmp_path / "out"
    proc = run_cli("predict", tmp_path / "m.pt", inputs, "--out", out, "--probs", "png16",
                   "--device", "cpu", "--precision", "fp32", "--batch-size", "2")
    assert proc.returncode == 1, proc.stderr
    assert "truncated.png" in proc.stderr and "notes.png" in proc.stderr
    assert "2 input(s) failed" in proc.stderr

    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    from pixelwise.data.io import read_image

    for name, path in [("a", inputs / "a.png"), ("b", inputs / "b.png"), ("c", inputs / "sub" / "c.jpg"),
                       ("gray", inputs / "gray.png")]:
        image = read_image(path)
        expected = predictor.predict(image).labels
        label_png = Image.open(out / "labels" / f"{name}.png")
        assert label_png.mode == "P"
        assert (np.asarray(label_png) == expected).all()
        assert label_png.getpalette()[3:6] == list(predictor.colors[1])
        overlay = np.asarray(Image.open(out / "overlays" / f"{name}.png"))
        assert overlay.shape[0] >= image.shape[0] and overlay.shape[1] > image.shape[1]  # legend panel
        probs = [np.asarray(Image.open(out / "probs" / name / f"{c}_c{c}.png")) for c in range(4)]
        assert probs[0].dtype == np.uint16 and probs[0].shape == image.shape[:2]
        total = np.sum([p.astype(np.int64) for p in probs], axis=0)
        assert np.abs(total - 65535).max() <= 4  # probabilities sum to 1 (rounding per class)
    assert not (out / "labels" / "truncated.png").exists()

    with open(out / "class_shares.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and set(rows[0]) == {"image", "width", "height", "c0", "c1", "c2", "c3"}
    row = next(r for r in rows if r["image"].endswith("c.jpg"))
    labels = np.asarray(Image.open(out / "labels" / "c.png"))
    assert (int(row["width"]), int(row["height"])) == (71, 23)
    for c in range(4):
        assert float(row[f"c{c}"]) == pytest.approx((labels == c).mean(), abs=1e-6)


def test_export_then_predict_with_onnx_matches_checkpoint(tmp_path, inputs):
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=3))
    proc = run_cli("export", tmp_path / "m.pt", "--format", "onnx", "--out", tmp_path / "m.onnx",
                   "--with-preprocessing")
    assert proc.returncode == 0, proc.stderr
    assert "parity vs PyTorch" in proc.stdout and "max |logit difference|" in proc.stdout
    diff = float(proc.stdout.split("max |logit difference| = ")[1].split()[0])
    assert diff < 1e-4

    out = tmp_path / "out"
    proc = run_cli("predict", tmp_path / "m.onnx", inputs / "*.png", "--out", out, "--probs", "npy", "--no-overlay")
    assert proc.returncode == 1  # the two bad files match the glob
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    image = np.asarray(Image.open(inputs / "b.png"))
    pred = predictor.predict(image, return_probabilities=True)
    assert (np.asarray(Image.open(out / "labels" / "b.png")) == pred.labels).all()
    np.testing.assert_allclose(np.load(out / "probs" / "b.npy"), pred.probabilities, atol=2e-3)  # float16 file
    assert not (out / "overlays").exists() and not (out / "labels" / "c.png").exists()  # c.jpg: not in glob


def test_predict_usage_errors_are_one_line(tmp_path):
    make_checkpoint(tmp_path / "m.pt", Task("binary"))
    proc = run_cli("predict", tmp_path / "m.pt", tmp_path / "nothing_here", "--out", tmp_path / "o")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "nothing_here" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("predict", tmp_path / "missing.pt", tmp_path, "--out", tmp_path / "o")
    assert proc.returncode == 2 and "missing.pt" in proc.stderr and "Traceback" not in proc.stderr
