"""ONNX and TorchScript export: dynamic shapes really work, parity, metadata, in-graph pre/post."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from pixelwise.export import export_onnx, export_torchscript, read_metadata
from pixelwise.inference import Predictor
from pixelwise.models.registry import get_entry
from pixelwise.tasks import Task
from test_predictor import MEAN, STD, make_checkpoint, reference_logits

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def normalised(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) normalised float, computed independently of pixelwise."""
    x = torch.tensor(images, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    return (x - torch.tensor(MEAN).view(1, -1, 1, 1)) / torch.tensor(STD).view(1, -1, 1, 1)


@pytest.mark.parametrize("name", ["unet", "segformer", pytest.param("deeplabv3plus", marks=pytest.mark.slow)])
def test_onnx_dynamic_batch_height_width_parity(tmp_path, name):
    task = Task("multiclass", num_classes=4)
    model = make_checkpoint(tmp_path / "m.pt", task, name=name, **get_entry(name).small_kwargs)
    result = export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx")
    assert result.max_abs_diff < 1e-4 and len(result.checked_sizes) == 2
    rng = np.random.default_rng(0)
    # Sizes and batch differ from the 64x64 export example and from the built-in parity sizes.
    for n, h, w in [(1, 40, 56), (3, 48, 32)]:
        x = normalised(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8))
        got = run_onnx(tmp_path / "m.onnx", x.numpy())
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == (n, 4, h, w)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_onnx_metadata_describes_everything_a_predictor_needs(tmp_path):
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=3))
    export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", with_decoding=True)
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["task"] == {"kind": "multiclass", "num_classes": 3, "ignore_index": 255, "threshold": 0.5}
    assert meta["class_names"] == ["c0", "c1", "c2"] and meta["colors"][1] == [40, 215, 7]
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)
    assert meta["with_preprocessing"] is False and meta["with_decoding"] is True
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["with_decoding"]) is True


def test_onnx_with_preprocessing_and_decoding_maps_uint8_image_to_labels(tmp_path):
    model = make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=5))
    result = export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", with_preprocessing=True, with_decoding=True)
    assert result.max_abs_diff == 0.0  # fraction of differing labels
    images = np.random.default_rng(1).integers(0, 256, (2, 33, 47, 3), dtype=np.uint8)
    labels = run_onnx(tmp_path / "m.onnx", images)
    assert labels.dtype == np.uint8 and labels.shape == (2, 33, 47)
    with torch.no_grad():
        expected = model(normalised(images)).argmax(1).numpy()
    assert (labels == expected).all()


def test_onnx_binary_decoding_applies_the_threshold(tmp_path):
    model = make_checkpoint(tmp_path / "b.pt", Task("binary", threshold=0.7))
    export_onnx(tmp_path / "b.pt", tmp_path / "b.onnx", with_preprocessing=True, with_decoding=True)
    images = np.random.default_rng(2).integers(0, 256, (1, 30, 20, 3), dtype=np.uint8)
    labels = run_onnx(tmp_path / "b.onnx", images)
    with torch.no_grad():
        probs = torch.sigmoid(model(normalised(images)))[:, 0].numpy()
    assert labels.shape == (1, 30, 20) and (labels == (probs > 0.7)).all()


@pytest.mark.parametrize("options", [{}, {"with_preprocessing": True}])
def test_predictor_from_onnx_matches_checkpoint(tmp_path, options):
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=4))
    export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", **options)
    torch_pred = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    onnx_pred = Predictor.from_onnx(tmp_path / "m.onnx")
    assert onnx_pred.class_names == torch_pred.class_names and onnx_pred.colors == torch_pred.colors
    for shape in [(45, 61, 3), (20, 20, 1)]:  # second one: gray image into an RGB model
        img = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
        a = torch_pred.predict(img, return_probabilities=True)
        b = onnx_pred.predict(img, return_probabilities=True)
        np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-5)
        assert (a.labels == b.labels).all()


def test_predictor_from_onnx_with_decoding_returns_labels(tmp_path):
    model = make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=4))
    export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", with_preprocessing=True, with_decoding=True)
    predictor = Predictor.load(tmp_path / "m.onnx")
    img = np.random.default_rng(5).integers(0, 256, (26, 39, 3), dtype=np.uint8)
    assert (predictor.predict(img).labels == reference_logits(model, img).argmax(1)[0].numpy()).all()
    with pytest.raises(Exception, match="probabilities"):
        predictor.predict(img, return_probabilities=True)


def test_torchscript_export_runs_at_two_sizes_without_pixelwise_code(tmp_path):
    model = make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=3))
    result = export_torchscript(tmp_path / "m.pt", tmp_path / "m.ts.pt")
    extra = {"pixelwise.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
        loaded = torch.jit.load(str(tmp_path / "m.ts.pt"), _extra_files=extra)
    assert json.loads(extra["pixelwise.json"])["task"]["num_classes"] == 3
    assert result.max_abs_diff < 1e-4
    for n, h, w in [(1, 40, 56), (2, 25, 70)]:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-4)
