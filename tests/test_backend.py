"""Choosing the inference backend by measurement (pixelwise.inference.backend).

Timings are injected (no speed is asserted); parity uses real logits; the export cache is
checked against a changed checkpoint; one test runs the real export and onnxruntime.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.errors import ConfigError, PixelwiseError
from pixelwise.inference import backend as B
from pixelwise.tasks import Task
from test_predictor import make_checkpoint


def _logits(seed=0, shape=(1, 4, 32, 32)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _timer(seconds):
    """A timer that reports fixed times per model function (by identity)."""
    return lambda fn, batch: seconds[fn]


def test_parity_thresholds_by_hand():
    ref = _logits()
    assert B.parity(ref, ref + 5e-4).ok  # within 1e-3, same argmax
    off = B.parity(ref, ref + 2e-3)
    assert not off.ok and off.max_abs_diff == pytest.approx(2e-3, rel=1e-3)
    flipped = ref.clone()
    top = ref.argmax(1)[0, 0, 0]
    flipped[0, :, 0, 0] = 0
    flipped[0, (top + 1) % 4, 0, 0] = 1  # one pixel of 1024 gets another class: 99.90 % < 99.99 %
    check = B.parity(ref, flipped)
    assert check.argmax_agreement == pytest.approx(1023 / 1024) and not check.ok
    assert not B.parity(ref, ref[:, :3]).ok  # wrong shape
    assert not B.parity(ref, torch.full_like(ref, float("nan"))).ok


def test_a_probe_that_says_slower_keeps_torch_and_faster_switches():
    ref = _logits()
    torch_fn = lambda x: ref  # noqa: E731
    ort_fn = lambda x: ref + 1e-5  # noqa: E731
    slower = B.choose(torch_fn, "fp32", ref, {"onnxruntime": ort_fn}, ref, _timer({torch_fn: 1.0, ort_fn: 1.5}))
    assert slower.backend == "torch" and slower.precision == "fp32"
    assert set(slower.seconds) == {"torch fp32", "onnxruntime fp32"}
    tie = B.choose(torch_fn, "bf16", ref, {"onnxruntime": ort_fn}, ref, _timer({torch_fn: 1.0, ort_fn: 1.0}))
    assert tie.backend == "torch" and tie.precision == "bf16"
    faster = B.choose(torch_fn, "bf16", ref, {"onnxruntime": ort_fn}, ref, _timer({torch_fn: 1.0, ort_fn: 0.4}))
    assert faster.backend == "onnxruntime" and faster.precision == "fp32"


def test_a_backend_failing_parity_is_never_used_even_when_faster():
    ref = _logits()
    torch_fn = lambda x: ref  # noqa: E731
    wrong = lambda x: ref + 0.01  # noqa: E731
    broken = lambda x: (_ for _ in ()).throw(RuntimeError("no kernel"))  # noqa: E731
    choice = B.choose(torch_fn, "fp32", ref, {"onnxruntime": wrong, "other": broken}, ref,
                      _timer({torch_fn: 1.0, wrong: 0.01, broken: 0.01}))
    assert choice.backend == "torch"
    assert "onnxruntime refused: parity failed" in choice.reason and "other refused: RuntimeError" in choice.reason
    assert list(choice.seconds) == ["torch fp32"]  # refused backends are not even timed


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "model.pt"
    make_checkpoint(path, Task("multiclass", num_classes=3))
    return path


def _fake_export(calls):
    def export(source, out):
        calls.append(source)
        out.write_bytes(b"onnx for " + source.read_bytes()[:16])
    return export


def test_a_changed_checkpoint_invalidates_the_cached_export(ckpt):
    calls = []
    first = B.cached_export(ckpt, _fake_export(calls))
    assert B.cached_export(ckpt, _fake_export(calls)) == first and len(calls) == 1  # reused
    assert first.parent == ckpt.parent / ".pixelwise-cache" and first.name == f"{B.content_hash(ckpt)}.onnx"
    make_checkpoint(ckpt, Task("multiclass", num_classes=3), seed=1)  # retrained: same name, new weights
    second = B.cached_export(ckpt, _fake_export(calls))
    assert second != first and len(calls) == 2


def test_cache_goes_under_pixelwise_home_when_the_checkpoint_folder_is_read_only(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(B.os, "access", lambda path, mode: False)
    assert B.cache_dir(ckpt) == tmp_path / "home" / "cache"


def test_a_model_that_cannot_export_falls_back_to_torch_with_one_line(ckpt, capsys):
    def failing(source, out):
        raise RuntimeError("aten::weird_op is not supported")

    choice, onnx = B.select(ckpt, "auto", "cpu", "fp32", export=failing)
    assert choice.backend == "torch" and onnx is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be exported" in err[0] and "weird_op" in err[0]
    with pytest.raises(ConfigError, match="cannot be exported"):
        B.select(ckpt, "onnxruntime", "cpu", "fp32", export=failing)


def test_select_refuses_a_wrong_backend_and_caches_the_decision(ckpt):
    calls = []
    wrong = lambda x: torch.zeros(x.shape[0], 3, *x.shape[2:])  # noqa: E731
    choice, onnx = B.select(ckpt, "auto", "cpu", "fp32", size=32, export=_fake_export(calls),
                            candidates=lambda path: {"onnxruntime": wrong}, timer=lambda fn, batch: 0.0 if fn is wrong else 1.0)
    assert choice.backend == "torch" and onnx is None and "parity failed" in choice.reason
    with pytest.raises(ConfigError, match="parity"):
        B.select(ckpt, "onnxruntime", "cpu", "fp32", size=32, export=_fake_export(calls),
                 candidates=lambda path: {"onnxruntime": wrong})
    # The decision is cached (keyed by CPU model, probe size and precision): no second probe.
    stored = json.loads((ckpt.parent / ".pixelwise-cache" / f"{B.content_hash(ckpt)}.backend.json").read_text())
    assert list(stored) == [B.decision_key("fp32", 32)] and B.cpu_model() in list(stored)[0]

    def no_probe(fn, batch):
        raise AssertionError("probed again")

    again, _ = B.select(ckpt, "auto", "cpu", "fp32", size=32, export=_fake_export(calls), timer=no_probe,
                        candidates=lambda path: {"onnxruntime": wrong})
    assert again.cached and again.backend == "torch" and len(calls) == 1


def test_real_onnxruntime_backend_predicts_the_same_labels_as_torch(ckpt, tmp_path):
    pytest.importorskip("onnxruntime")
    image = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    labels = {}
    for backend in ("torch", "onnxruntime", "auto"):
        proc = subprocess.run([sys.executable, "-m", "pixelwise", "predict", str(ckpt), str(tmp_path / "a.png"),
                               "--out", str(tmp_path / backend), "--device", "cpu", "--precision", "fp32",
                               "--backend", backend, "--no-progress", "--no-overlay"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        labels[backend] = np.asarray(Image.open(tmp_path / backend / "labels" / "a.png"))
        if backend == "auto":  # one line naming the choice and the measured times
            line = [x for x in proc.stderr.splitlines() if x.startswith("backend:")]
            assert len(line) == 1 and "torch fp32" in line[0] and "onnxruntime fp32" in line[0]
    assert np.array_equal(labels["torch"], labels["onnxruntime"])
    assert np.array_equal(labels["torch"], labels["auto"])
    cache = ckpt.parent / ".pixelwise-cache"
    assert (cache / f"{B.content_hash(ckpt)}.onnx").is_file()  # exported once, reused by auto
    assert (cache / f"{B.content_hash(ckpt)}.backend.json").is_file()


def test_evaluate_scores_the_same_on_onnxruntime_as_on_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    from pixelwise.training.evaluation import evaluate_checkpoint

    ckpt = tmp_path / "m.pt"
    make_checkpoint(ckpt, Task("multiclass", num_classes=5))  # the shapes set's 5 classes
    data = "synthetic:shapes?n=6&size=32&seed=0"
    scores = {backend: evaluate_checkpoint(ckpt, data=data, split="val", out_dir=tmp_path / backend, device="cpu",
                                           precision="fp32", verbose=False, n_resamples=10, backend=backend)
              for backend in ("torch", "onnxruntime")}
    assert scores["torch"]["confusion_matrix"] == scores["onnxruntime"]["confusion_matrix"]


def test_a_calibrated_checkpoint_passes_parity_and_evaluate_divides_by_the_temperature_once(tmp_path):
    """The export holds logits / T; the probe's PyTorch reference must too, and evaluate must not
    divide a second time (same scores as PyTorch, calibration included)."""
    pytest.importorskip("onnxruntime")
    from pixelwise.checkpoint import load_checkpoint, save_checkpoint
    from pixelwise.training.evaluation import evaluate_checkpoint

    ckpt = tmp_path / "m.pt"
    make_checkpoint(ckpt, Task("multiclass", num_classes=5))
    raw = load_checkpoint(ckpt)
    raw["calibration"] = {"temperature": [2.5]}
    save_checkpoint(ckpt, raw)
    choice, onnx = B.select(ckpt, "onnxruntime", "cpu", "fp32", size=32)
    assert onnx is not None and "parity" in choice.reason
    data = "synthetic:shapes?n=4&size=32&seed=0"
    scores = {backend: evaluate_checkpoint(ckpt, data=data, split="val", out_dir=tmp_path / backend, device="cpu",
                                           precision="fp32", verbose=False, n_resamples=10, backend=backend)
              for backend in ("torch", "onnxruntime")}
    assert scores["torch"]["ece"] == pytest.approx(scores["onnxruntime"]["ece"], abs=1e-5)
    assert scores["torch"]["confusion_matrix"] == scores["onnxruntime"]["confusion_matrix"]
