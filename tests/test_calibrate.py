"""Temperature scaling: the fit against a grid-search oracle, a deliberately over-confident
trained model through the real `pixelwise calibrate` CLI, and the temperature applied by
evaluate, the Predictor and the ONNX export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pixelwise.inference.calibration import PixelSample, fit_temperature, with_calibration
from pixelwise.tasks import Task
from pixelwise.checkpoint import build_model, load_checkpoint, load_safetensors, save_checkpoint

PIXELWISE = [sys.executable, "-m", "pixelwise"]
GRID = torch.exp(torch.linspace(np.log(0.05), np.log(40.0), 4001, dtype=torch.float64))
STEP = float(GRID[1] / GRID[0])  # ratio between neighbouring grid temperatures


def _grid_argmin(nll_of_t) -> float:
    values = torch.stack([nll_of_t(t) for t in GRID])
    return float(GRID[int(values.argmin())])


def test_multiclass_fit_matches_grid_search():
    gen = torch.Generator().manual_seed(0)
    true_logits = torch.randn(5000, 4, generator=gen) * 1.5
    y = torch.multinomial(torch.softmax(true_logits, dim=1), 1, generator=gen)[:, 0]
    logits = true_logits * 4  # over-confident by a factor 4
    fitted = fit_temperature(logits, y, Task("multiclass", 4))
    assert len(fitted) == 1
    oracle = _grid_argmin(lambda t: F.cross_entropy(logits.double() / t, y, reduction="sum"))
    assert oracle / STEP <= fitted[0] <= oracle * STEP
    assert 3.0 < fitted[0] < 5.5  # near the factor it was made over-confident by


def test_multilabel_per_label_fit_matches_grid_search_per_channel():
    gen = torch.Generator().manual_seed(1)
    true_logits = torch.randn(6000, 2, generator=gen) * 2
    y = (torch.rand(6000, 2, generator=gen) < torch.sigmoid(true_logits)).long()
    y[:500, 1] = 255  # ignored elements stay out of the fit
    logits = true_logits * torch.tensor([3.0, 0.5])
    task = Task("multilabel", 2)
    fitted = fit_temperature(logits, y, task, per_label=True)
    for k in range(2):
        keep = y[:, k] != 255
        z, t_k = logits[keep, k].double(), y[keep, k].double()
        oracle = _grid_argmin(lambda t: F.binary_cross_entropy_with_logits(z / t, t_k, reduction="sum"))
        assert oracle / STEP <= fitted[k] <= oracle * STEP, (k, fitted, oracle)
    scalar = fit_temperature(logits, y, task)
    assert len(scalar) == 1 and fitted[1] < scalar[0] < fitted[0]


def test_per_label_refused_for_multiclass():
    from pixelwise.errors import ConfigError

    with pytest.raises(ConfigError, match="binary and multilabel"):
        fit_temperature(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), Task("multiclass", 3), per_label=True)


def test_pixel_sample_is_bounded_uniform_and_skips_ignored():
    task = Task("multiclass", 3)
    logits = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    target = torch.zeros(2, 10, 10, dtype=torch.long)
    target[:, :5] = 255  # half the pixels ignored
    everything = PixelSample(task, max_pixels=1000)
    everything.add(logits, target)
    assert len(everything) == 100 and everything.seen == 100
    bounded = PixelSample(task, max_pixels=30, seed=4)
    for i in range(2):
        bounded.add(logits[i:i + 1], target[i:i + 1])
    assert len(bounded) == 30 and bounded.seen == 100
    # The kept rows are real rows of the counted pixels, each once.
    rows = {tuple(r.tolist()) for r in everything.logits}
    assert all(tuple(r.tolist()) in rows for r in bounded.logits)
    assert len({tuple(r.tolist()) for r in bounded.logits}) == 30


@pytest.fixture(scope="module")
def overconfident_run(tmp_path_factory):
    """A tiny trained run whose head is scaled by 5: every logit x5, the same labels, over-confident."""
    from test_training import tiny

    from pixelwise.training.trainer import train

    run = tmp_path_factory.mktemp("calib_run")
    # ~0.87 pixel accuracy on validation: good enough that a finite temperature fits.
    config = tiny(train={"epochs": 8, "seed": 3},
                  data={"root": "synthetic:shapes?n=32&n_val=6&n_test=4&size=32"}, optim={"lr": 0.02})
    train(config, run, verbose=False, evaluate_test=False)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        ckpt = load_checkpoint(path)
        for key in ("head.weight", "head.bias"):
            ckpt["state_dict"][key] = ckpt["state_dict"][key] * 5.0
        save_checkpoint(path, ckpt)
    return run


@pytest.mark.slow
def test_calibrate_lowers_ece_keeps_labels_and_matches_oracle(overconfident_run, tmp_path):
    from pixelwise.data import build_transforms, open_dataset
    from pixelwise.inference import Predictor
    from pixelwise.training.evaluation import evaluate_checkpoint

    run = overconfident_run
    before = evaluate_checkpoint(run, split="val", out_dir=tmp_path / "before", device="cpu", precision="fp32",
                                 n_resamples=10, verbose=False)
    proc = subprocess.run([*PIXELWISE, "calibrate", str(run), "--device", "cpu", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt["calibration"]["temperature"] == entry["temperature"]
    assert load_safetensors(run / "model.safetensors")["calibration"]["temperature"] == entry["temperature"]
    (t,) = entry["temperature"]
    assert t > 1.5  # a model scaled by 5 has to be cooled down
    assert entry["nll_after"] < entry["nll_before"]

    after = evaluate_checkpoint(run, split="val", out_dir=tmp_path / "after", device="cpu", precision="fp32",
                                n_resamples=10, verbose=False)
    assert after["calibration"]["temperature"] == [t] and before["calibration"]["temperature"] is None
    assert after["ece"] < before["ece"]
    assert after["confusion_matrix"] == before["confusion_matrix"]  # labels unchanged

    # Oracle: the raw model's logits on every labelled validation pixel, NLL over a grid of T.
    model = build_model(ckpt)
    pre = ckpt["preprocess"]
    task = Task.from_dict(ckpt["task"])
    dataset = open_dataset(ckpt["config"]["data"]["root"], "val",
                           transform=build_transforms(False, None, pre["mean"], pre["std"], 255), task=task)
    rows, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            image, target = dataset[i]
            z = model(image[None])[0].permute(1, 2, 0).reshape(-1, task.num_classes)
            keep = target.reshape(-1) != 255
            rows.append(z[keep]), labels.append(target.reshape(-1)[keep])
    z, y = torch.cat(rows).double(), torch.cat(labels)
    assert entry["pixels"] == len(y)  # fewer than 2M pixels: the sample is all of them
    oracle = _grid_argmin(lambda temp: F.cross_entropy(z / temp, y, reduction="sum"))
    assert oracle / STEP <= t <= oracle * STEP

    # The Predictor applies the stored temperature: probabilities = softmax(raw logits / T).
    predictor = Predictor.from_checkpoint(run / "checkpoints" / "best.pt", device="cpu", precision="fp32")
    image, _ = dataset.read_raw(0)
    got = predictor.predict(image, return_probabilities=True)
    with torch.no_grad():
        raw = model(dataset[0][0][None]).double()
    expected = torch.softmax(raw / t, dim=1)[0].numpy()
    np.testing.assert_allclose(got.probabilities, expected, atol=1e-4)
    np.testing.assert_array_equal(got.labels, raw.argmax(dim=1)[0].numpy())


@pytest.mark.slow
def test_onnx_export_divides_by_the_temperature(overconfident_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from pixelwise.export.onnx import export_onnx, read_metadata
    from pixelwise.inference import Predictor

    path = overconfident_run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    ckpt["calibration"] = {"temperature": [2.5]}
    save_checkpoint(tmp_path / "c.pt", ckpt)
    export_onnx(tmp_path / "c.pt", tmp_path / "c.onnx")
    assert read_metadata(tmp_path / "c.onnx")["temperature"] == [2.5]
    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    onnx_probs = Predictor.from_onnx(tmp_path / "c.onnx").predict(image, return_probabilities=True).probabilities
    pt_probs = Predictor.from_checkpoint(tmp_path / "c.pt", device="cpu", precision="fp32").predict(
        image, return_probabilities=True).probabilities
    np.testing.assert_allclose(onnx_probs, pt_probs, atol=1e-4)
    # And the temperature really is in the graph: the uncalibrated model is sharper.
    raw = Predictor.from_checkpoint(path, device="cpu", precision="fp32").predict(
        image, return_probabilities=True).probabilities
    assert raw.max(axis=0).mean() > onnx_probs.max(axis=0).mean() + 0.01


def test_checkpoint_without_calibration_is_unchanged():
    from pixelwise.checkpoint import CheckpointMeta

    base = {"model": {"name": "unet"}, "task": {"kind": "multilabel", "num_classes": 2}}
    assert CheckpointMeta.from_dict(base).temperature is None  # older checkpoints: no entry
    meta = CheckpointMeta.from_dict({**base, "calibration": {"temperature": [2.0, 0.5], "pixels": 10}})
    assert meta.temperature == (2.0, 0.5)
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta
    model = torch.nn.Conv2d(3, 2, 1)
    assert with_calibration(model, None) is model
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(with_calibration(model, meta.temperature)(x),
                               model(x) / torch.tensor([2.0, 0.5]).view(1, 2, 1, 1))


@pytest.mark.parametrize("entry, problem", [
    ({"temperature": [0.0]}, "positive"), ({"temperature": ["warm"]}, "numbers"),
    ({"temperature": [1.0, 2.0, 3.0]}, "expected 1 or 2"), ({"pixels": 3}, "numbers"),
])
def test_bad_calibration_entry_names_the_entry(entry, problem):
    from pixelwise.checkpoint import CheckpointMeta
    from pixelwise.errors import CheckpointError

    with pytest.raises(CheckpointError, match=f"calibration.temperature.*{problem}"):
        CheckpointMeta.from_dict({"model": {"name": "unet"}, "task": {"kind": "multilabel", "num_classes": 2},
                                  "calibration": entry}, source="x.pt")


def test_calibrate_cli_refuses_per_label_for_multiclass(overconfident_run):
    proc = subprocess.run([*PIXELWISE, "calibrate", str(overconfident_run), "--per-label", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "error:" in proc.stderr and "binary and multilabel" in proc.stderr
