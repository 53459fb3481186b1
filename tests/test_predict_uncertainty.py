"""`predict --uncertainty` as a real subprocess, the library call per task, and the service's
`uncertainty` query parameter on a real uvicorn server; each checked against maps computed
independently from the model's raw logits."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.inference import Predictor
from pixelwise.inference.uncertainty import predict_with_uncertainty
from pixelwise.tasks import Task
from test_predictor import make_checkpoint, reference_logits

PIXELWISE = [sys.executable, "-m", "pixelwise"]


def _image(h=36, w=44, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _entropy(probs: np.ndarray) -> np.ndarray:  # (C, H, W) -> normalised entropy, written out longhand
    c = probs.shape[0]
    total = np.zeros(probs.shape[1:], dtype=np.float64)
    for k in range(c):
        p = probs[k].astype(np.float64)
        total -= np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0.0)
    return total / math.log(c)


@pytest.fixture()
def model_dir(tmp_path):
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=4), base_channels=4, depth=2)
    _sharpen(tmp_path / "m.pt")
    return tmp_path


def _sharpen(path: Path, factor: float = 60.0, center_on: np.ndarray | None = None):
    """An untrained head gives near-uniform probabilities (entropy ~1 everywhere); scaling it
    spreads the maps over a wide range, so the comparisons are not between constants. With
    `center_on` (sigmoid tasks) the head is instead scaled to a logit spread of 2 per channel on that image
    and shifted so each channel's median logit there is 0."""
    from pixelwise.checkpoint import build_model, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(path)
    shift = 0.0
    if center_on is not None:
        logits = reference_logits(build_model(ckpt), center_on)[0].flatten(1)  # (K, H*W)
        scale = 2.0 / logits.std(dim=1)  # per channel
        shift = scale * logits.median(dim=1).values
        factor = scale.view(-1, *[1] * (ckpt["state_dict"]["head.weight"].ndim - 1))
    ckpt["state_dict"]["head.weight"] = ckpt["state_dict"]["head.weight"] * factor
    ckpt["state_dict"]["head.bias"] = ckpt["state_dict"]["head.bias"] * (factor if center_on is None else scale)
    ckpt["state_dict"]["head.bias"] -= shift
    save_checkpoint(path, ckpt)
    return build_model(ckpt)


def test_predict_cli_writes_entropy_maps_overlays_and_csv_scores(model_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    images = {"a": _image(seed=1), "b": _image(seed=2)}
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    out = tmp_path / "out"
    proc = subprocess.run([*PIXELWISE, "predict", str(model_dir / "m.pt"), str(folder), "--out", str(out),
                           "--uncertainty", "entropy", "--device", "cpu", "--precision", "fp32", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    predictor = Predictor.from_checkpoint(model_dir / "m.pt", device="cpu", precision="fp32")
    rows = {Path(r["image"]).stem: r for r in csv.DictReader((out / "class_shares.csv").open())}
    for name, image in images.items():
        probs = predictor.predict(image, return_probabilities=True).probabilities
        expected = _entropy(probs)
        got = np.asarray(Image.open(out / "uncertainty" / f"{name}.png"))
        assert got.dtype == np.uint16 and got.shape == image.shape[:2]
        np.testing.assert_allclose(got / 65535.0, expected, atol=2e-4)
        assert float(rows[name]["uncertainty_entropy"]) == pytest.approx(expected.mean(), abs=1e-4)
        overlay = np.asarray(Image.open(out / "uncertainty_overlays" / f"{name}.png"))
        assert overlay.shape == (*image.shape[:2], 3)
        assert (out / "labels" / f"{name}.png").is_file()  # the label maps are still written


def test_predict_cli_tta_variance_npy_and_refusal(model_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = _image(seed=3)
    Image.fromarray(image).save(folder / "x.png")
    refused = subprocess.run([*PIXELWISE, "predict", str(model_dir / "m.pt"), str(folder), "--out", str(tmp_path / "r"),
                              "--uncertainty", "tta-variance", "--device", "cpu", "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "error:" in refused.stderr and "--tta" in refused.stderr
    assert not (tmp_path / "r" / "labels" / "x.png").exists()
    out = tmp_path / "out"
    proc = subprocess.run([*PIXELWISE, "predict", str(model_dir / "m.pt"), str(folder), "--out", str(out),
                           "--uncertainty", "tta-variance", "--uncertainty-format", "npy", "--tta", "hflip",
                           "--device", "cpu", "--precision", "fp32", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # Independent: the two views' softmax, variance over views x 4, mean over classes.
    from pixelwise.checkpoint import build_model, load_checkpoint

    net = build_model(load_checkpoint(model_dir / "m.pt"))
    plain = torch.softmax(reference_logits(net, image), dim=1)[0].numpy()
    flipped = torch.softmax(reference_logits(net, image[:, ::-1].copy()), dim=1)[0].numpy()[:, :, ::-1]
    expected = (4 * np.var(np.stack([plain, flipped]), axis=0)).mean(axis=0)
    got = np.load(out / "uncertainty" / "x.npy")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    tta_labels = np.asarray(Image.open(out / "labels" / "x.png"))
    np.testing.assert_array_equal(tta_labels, ((plain + flipped) / 2).argmax(axis=0))


@pytest.mark.parametrize("kind", ["binary", "multilabel"])
def test_bernoulli_entropy_per_task(tmp_path, kind):
    task = Task("binary") if kind == "binary" else Task("multilabel", num_classes=3)
    image = _image(seed=4)
    make_checkpoint(tmp_path / "m.pt", task, base_channels=4, depth=2)
    net = _sharpen(tmp_path / "m.pt", center_on=image)
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    (pred, umap), = predict_with_uncertainty(predictor, [image], "entropy")
    p = torch.sigmoid(reference_logits(net, image))[0].double().numpy()  # (K, H, W)
    bits = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert bits.std() > 0.05  # a real spread of values
    np.testing.assert_allclose(umap.numpy(), bits.mean(axis=0), atol=1e-5)
    (_, margin), = predict_with_uncertainty(predictor, [image], "margin")
    np.testing.assert_allclose(margin.numpy(), (1 - np.abs(2 * p - 1)).mean(axis=0), atol=1e-5)


def test_service_returns_uncertainty_on_request(model_dir):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from pixelwise.bench.bench_serve import serving

    from pixelwise.serve import create_app

    predictor = Predictor.from_checkpoint(model_dir / "m.pt", device="cpu", precision="fp32")
    image = _image(seed=5)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    files = {"file": ("x.png", buffer.getvalue(), "image/png")}
    expected = _entropy(predictor.predict(image, return_probabilities=True).probabilities)
    with serving(create_app(predictor, name="tiny")) as url:
        png = httpx.post(f"{url}/predict", params={"format": "png", "uncertainty": "entropy"}, files=files, timeout=60)
        assert png.status_code == 200, png.text
        got = np.asarray(Image.open(io.BytesIO(png.content)))
        assert got.dtype == np.uint16
        np.testing.assert_allclose(got / 65535.0, expected, atol=2e-4)
        assert float(png.headers["X-Uncertainty"]) == pytest.approx(expected.mean(), abs=1e-4)
        answer = httpx.post(f"{url}/predict", params={"format": "json", "uncertainty": "margin"}, files=files,
                            timeout=60).json()
        assert answer["uncertainty"]["method"] == "margin" and 0 <= answer["uncertainty"]["mean"] <= 1
        plain = httpx.post(f"{url}/predict", params={"format": "json"}, files=files, timeout=60).json()
        assert "uncertainty" not in plain
        overlay = httpx.post(f"{url}/predict", params={"format": "overlay", "uncertainty": "entropy"}, files=files,
                             timeout=60)
        assert np.asarray(Image.open(io.BytesIO(overlay.content))).shape == (*image.shape[:2], 3)
        refused = httpx.post(f"{url}/predict", params={"uncertainty": "tta-variance"}, files=files, timeout=60)
        assert refused.status_code == 422 and "tta" in refused.json()["detail"]
