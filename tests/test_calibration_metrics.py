"""ECE, MCE and classwise ECE: a hand-computed table and torchmetrics as an independent oracle."""

from __future__ import annotations

import math

import pytest
import torch

from pixelwise.metrics.calibration import CalibrationAccumulator, bin_index, calibration_errors
from pixelwise.tasks import Task


def _two_class_logits(p1: list[float]) -> torch.Tensor:
    """(1, 2, 1, P) logits whose softmax gives class 1 the probability p1."""
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))]).float()[None, :, None, :]


def test_hand_computed_table():
    # Pixels: p(class 1), target. E is ignored and must not count anywhere.
    #   A .90 -> 1 (right)   B .90 -> 0 (wrong)   C .38 -> 0 (right, conf .62)   D .55 -> 1 (right)   E .99 ignored
    # Top-label bins of 1/15: .90 -> 13 (n 2, acc .5, gap .40); .62 -> 9 (acc 1, gap .38); .55 -> 8 (gap .45)
    # ECE = 2/4 * .40 + 1/4 * .38 + 1/4 * .45 = .4075; MCE = .45.
    # Class 1's own probability: .90 x2 (one positive) gap .40, .38 negative gap .38, .55 positive gap .45
    # -> .4075; class 0 mirrors it (.10 x2, .62, .45) -> .4075.
    logits = _two_class_logits([0.9, 0.9, 0.38, 0.55, 0.99])
    target = torch.tensor([[[1, 0, 0, 1, 255]]])
    acc = CalibrationAccumulator(Task("multiclass", 2))
    acc.update(logits, target)
    s = acc.summary(["bg", "fg"])
    assert s["pixels"] == 4
    assert s["ece"] == pytest.approx(0.4075, abs=1e-6)
    assert s["mce"] == pytest.approx(0.45, abs=1e-6)
    assert s["per_class_ece"]["fg"] == pytest.approx(0.4075, abs=1e-6)
    assert s["per_class_ece"]["bg"] == pytest.approx(0.4075, abs=1e-6)
    assert s["classwise_ece"] == pytest.approx(0.4075, abs=1e-6)
    assert s["bins"]["count"][13] == 2 and s["bins"]["accuracy"][13] == pytest.approx(0.5)
    assert sum(s["bins"]["count"]) == 4


def test_bins_and_edge_cases():
    assert bin_index(torch.tensor([0.0, 1 / 15 - 1e-6, 0.5, 1.0]), 15).tolist() == [0, 0, 7, 14]
    assert all(math.isnan(v) for v in calibration_errors(torch.zeros(3), torch.zeros(3), torch.zeros(3)))
    # Perfect calibration in one bin: 10 pixels at confidence .7, 7 right.
    ece, mce = calibration_errors(torch.tensor([0.0, 10.0]), torch.tensor([0.0, 7.0]), torch.tensor([0.0, 7.0]))
    assert ece == pytest.approx(0.0) and mce == pytest.approx(0.0)


def test_streaming_equals_one_batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, 9, 7, generator=gen) * 3
    target = torch.randint(0, 4, (6, 9, 7), generator=gen)
    target[:, 0] = 255
    task = Task("multiclass", 4)
    whole, parts = CalibrationAccumulator(task), CalibrationAccumulator(task)
    whole.update(logits, target)
    for i in range(6):
        parts.update(logits[i:i + 1], target[i:i + 1])
    assert torch.allclose(whole.count, parts.count) and torch.allclose(whole.class_positive, parts.class_positive)
    assert whole.ece() == pytest.approx(parts.ece(), abs=1e-12)


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_slabs_give_the_same_bins(monkeypatch, kind):
    import pixelwise.metrics.calibration as calibration

    gen = torch.Generator().manual_seed(5)
    task = Task(kind, 3)
    logits = torch.randn(2, 3, 13, 11, generator=gen) * 2
    if kind == "multilabel":
        target = (torch.rand(2, 3, 13, 11, generator=gen) < 0.5).long()
    else:
        target = torch.randint(0, 3, (2, 13, 11), generator=gen)
    whole = CalibrationAccumulator(task)
    whole.update(logits, target)
    monkeypatch.setattr(calibration, "SLAB_PIXELS", 30)  # bands of 2 rows
    pieces = list(calibration.pixel_slabs(logits, target, 30))
    assert len(pieces) == 2 * 7 and sum(p.shape[-2] for p, _ in pieces) == 2 * 13
    sliced = CalibrationAccumulator(task)
    sliced.update(logits, target)
    for name in ("count", "confidence", "correct", "class_count", "class_confidence", "class_positive"):
        torch.testing.assert_close(getattr(sliced, name), getattr(whole, name))


@pytest.fixture()
def tm():
    return pytest.importorskip("torchmetrics.classification")


def test_multiclass_matches_torchmetrics(tm):
    gen = torch.Generator().manual_seed(1)
    c = 5
    logits = torch.randn(4, c, 16, 12, generator=gen) * 2.5
    target = torch.randint(0, c, (4, 16, 12), generator=gen)
    target[target == 3] = torch.where(torch.rand((target == 3).sum(), generator=gen) < 0.5, 3, 255)
    acc = CalibrationAccumulator(Task("multiclass", c))
    acc.update(logits, target)
    probs = torch.softmax(logits, dim=1)
    for norm, ours in (("l1", acc.ece()), ("max", acc.mce())):
        oracle = tm.MulticlassCalibrationError(num_classes=c, n_bins=15, norm=norm, ignore_index=255)
        assert ours == pytest.approx(float(oracle(probs, target)), abs=1e-5)
    flat = probs.permute(0, 2, 3, 1).reshape(-1, c)
    labels = target.reshape(-1)
    keep = labels != 255
    for k, ours in enumerate(acc.classwise()):
        oracle = tm.BinaryCalibrationError(n_bins=15, norm="l1")
        assert ours == pytest.approx(float(oracle(flat[keep, k], (labels[keep] == k).long())), abs=1e-5)


def test_binary_matches_torchmetrics(tm):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 20, 20, generator=gen) * 2
    target = (torch.rand(3, 20, 20, generator=gen) < torch.sigmoid(logits[:, 0] * 1.7)).long()
    target[:, :, :2] = 255
    acc = CalibrationAccumulator(Task("binary"))
    acc.update(logits, target)
    p = torch.sigmoid(logits[:, 0])
    keep = target != 255
    two = torch.stack([1 - p[keep], p[keep]], dim=1)
    for norm, ours in (("l1", acc.ece()), ("max", acc.mce())):
        oracle = tm.MulticlassCalibrationError(num_classes=2, n_bins=15, norm=norm)
        assert ours == pytest.approx(float(oracle(two, target[keep])), abs=1e-5)
    fg = tm.BinaryCalibrationError(n_bins=15)(p[keep], target[keep])
    assert acc.classwise()[1] == pytest.approx(float(fg), abs=1e-5)


def test_multilabel_matches_torchmetrics(tm):
    gen = torch.Generator().manual_seed(3)
    c = 3
    logits = torch.randn(2, c, 15, 10, generator=gen) * 2
    target = (torch.rand(2, c, 15, 10, generator=gen) < 0.4).float()
    target[:, 1, :3] = 255  # ignored per element
    acc = CalibrationAccumulator(Task("multilabel", c))
    acc.update(logits, target)
    p = torch.sigmoid(logits)
    keep = target != 255
    two = torch.stack([1 - p[keep], p[keep]], dim=1)
    oracle = tm.MulticlassCalibrationError(num_classes=2, n_bins=15, norm="l1")
    assert acc.ece() == pytest.approx(float(oracle(two, target[keep].long())), abs=1e-5)
    assert acc.pixels == int(keep.sum())
    for k, ours in enumerate(acc.classwise()):
        m = keep[:, k]
        expected = tm.BinaryCalibrationError(n_bins=15)(p[:, k][m], target[:, k][m].long())
        assert ours == pytest.approx(float(expected), abs=1e-5)
