"""Sliding-window inference: tiled == whole-image for a local model, bounded memory, layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.inference.tiling import predict_tiled, tile_count, tile_starts, window_1d
from pixelwise.tasks import Task


def local_model(out_channels: int = 5, seed: int = 0) -> nn.Module:
    """Three 3x3 convs: receptive-field radius 3 pixels, so a margin of 4 hides tile edges."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(),
        nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(),
        nn.Conv2d(8, out_channels, 3, padding=1),
    ).eval()


def whole_logits(model: nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    with torch.no_grad():
        return model(x)[0].numpy()


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (150, 203, 3), dtype=np.uint8)


def test_tile_starts_cover_and_end_at_border():
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(101, 40, 10) == [0, 30, 60, 61]
    assert tile_starts(30, 40, 10) == [0]
    assert tile_count(100, 101, 40, 10) == 12
    with pytest.raises(ValueError):
        tile_starts(100, 10, 10)


def test_window_is_zero_in_margins_and_positive_inside():
    for blend in ("gaussian", "linear"):
        w = window_1d(32, blend, margin_start=4, margin_end=0, ramp=8)
        assert (w[:4] == 0).all() and (w[4:] > 0).all()
    linear = window_1d(32, "linear", 4, 4, ramp=8)
    assert linear[4] == pytest.approx(1 / 8) and linear[16] == 1.0 and linear[27] == pytest.approx(1 / 8)


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_tiled_logits_equal_whole_image(image, blend):
    model = local_model()
    expected = whole_logits(model, image)
    with torch.no_grad():
        got = predict_tiled(model, image, tile=64, overlap=16, margin=4, blend=blend, batch_size=3, output="logits")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_tiled_labels_equal_whole_image_argmax(image):
    model = local_model()
    task = Task("multiclass", num_classes=5)
    expected = whole_logits(model, image).argmax(0)
    with torch.no_grad():
        labels = predict_tiled(model, image, tile=48, overlap=16, margin=4, task=task)
    assert labels.dtype == np.uint8 and labels.shape == image.shape[:2]
    assert (labels == expected).all()


def test_tiled_probabilities_match_softmax_of_whole_image(image):
    model = local_model()
    task = Task("multiclass", num_classes=5)
    expected = torch.softmax(torch.from_numpy(whole_logits(model, image)), 0).numpy()
    with torch.no_grad():
        probs = predict_tiled(model, image, tile=64, overlap=24, margin=6, task=task, output="probabilities")
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_without_margin_tile_seams_differ_from_whole_image(image):
    # The margin is what makes tiling exact: with zero margin, tile-edge pixels see zero padding.
    model = local_model()
    with torch.no_grad():
        got = predict_tiled(model, image, tile=64, overlap=16, margin=0, blend="linear", output="logits")
    assert np.abs(got - whole_logits(model, image)).max() > 1e-3


def test_multilabel_and_binary_decoding(image):
    model = local_model(out_channels=3, seed=1)
    logits = whole_logits(model, image)
    task = Task("multilabel", num_classes=3, threshold=(0.5, 0.4, 0.6))
    with torch.no_grad():
        masks = predict_tiled(model, image, tile=64, overlap=16, margin=4, task=task)
    probs = 1 / (1 + np.exp(-logits))
    assert masks.shape == (3, *image.shape[:2]) and masks.dtype == np.uint8
    assert (masks == (probs > np.array([0.5, 0.4, 0.6])[:, None, None])).all()

    binary = local_model(out_channels=1, seed=2)
    with torch.no_grad():
        labels = predict_tiled(binary, image, tile=64, overlap=16, margin=4, task=Task("binary"))
    assert (labels == (whole_logits(binary, image)[0] > 0)).all()


def test_streaming_calls_model_on_tile_sized_batches_only(image):
    seen: list[tuple[int, ...]] = []
    model = local_model()

    def fn(x):
        seen.append(tuple(x.shape))
        return model(x)

    with torch.no_grad():
        predict_tiled(fn, image, tile=64, overlap=16, batch_size=2)
    assert all(s[0] <= 2 and s[2:] == (64, 64) for s in seen)
    assert sum(s[0] for s in seen) == tile_count(150, 203, 64, 16)


def test_image_smaller_than_tile_and_gray_input():
    gray = np.random.default_rng(1).integers(0, 256, (20, 30, 1), dtype=np.uint8)
    model = nn.Conv2d(1, 2, 3, padding=1).eval()
    with torch.no_grad():
        got = predict_tiled(model, gray, tile=64, output="logits")
        expected = model(torch.from_numpy(gray).permute(2, 0, 1).float()[None] / 255)[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
