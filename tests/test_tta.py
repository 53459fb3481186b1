"""Test-time augmentation: view parsing, flip equivariance, averaging in probability space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.inference.tta import View, parse_tta, probabilities_to_logits, tta_probabilities, with_tta
from pixelwise.tasks import Task


def test_parse_tta_spec_forms():
    assert parse_tta(None) == [View()]
    views = parse_tta(["hflip", "vflip", "scale:0.75,1.0,1.25"])
    assert len(views) == 9 and View() in views and View(True, False, 0.75) in views
    assert parse_tta("hflip,scale:0.5,2") == parse_tta(["hflip", "scale:0.5,2"])
    assert len(parse_tta("hflip,scale:0.5,2")) == 6  # {id, hflip} x {0.5, 1, 2}
    with pytest.raises(ConfigError, match="rot90"):
        parse_tta("rot90")
    with pytest.raises(ConfigError):
        parse_tta("scale:0,1")


def symmetric_model() -> nn.Module:
    """Convs with kernels symmetric under both flips: the model commutes with flips."""
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1)
    with torch.no_grad():
        for conv in (conv1, conv2):
            w = conv.weight
            conv.weight.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1).flip(-2)) / 4)
    return nn.Sequential(conv1, nn.ReLU(), conv2).eval()


def test_flip_tta_of_flip_equivariant_model_equals_no_tta():
    model = symmetric_model()
    x = torch.rand(2, 3, 17, 23)
    task = Task("multiclass", num_classes=4)
    with torch.no_grad():
        plain = task.probabilities(model(x))
        tta = tta_probabilities(model, x, task, parse_tta("hflip,vflip"))
    np.testing.assert_allclose(tta.numpy(), plain.numpy(), atol=1e-6)


def test_flip_tta_of_non_equivariant_model_differs():
    torch.manual_seed(1)
    model = nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.rand(1, 3, 16, 16)
    task = Task("multiclass", num_classes=4)
    with torch.no_grad():
        plain = task.probabilities(model(x))
        tta = tta_probabilities(model, x, task, parse_tta("hflip"))
        by_hand = (plain + task.probabilities(model(x.flip(-1))).flip(-1)) / 2
    assert (tta - plain).abs().max() > 1e-4
    np.testing.assert_allclose(tta.numpy(), by_hand.numpy(), atol=1e-6)


def view_dependent_model(table: dict[str, list[float]]):
    """Constant logits per pixel, chosen by which flip the input went through.

    The input rises left->right and top->bottom, so the view is readable from its corners.
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        h = bool(x[0, 0, 0, 0] > x[0, 0, 0, -1])
        v = bool(x[0, 0, 0, 0] > x[0, 0, -1, 0])
        key = "hflip" if h else "vflip" if v else "id"
        logits = torch.tensor(table[key]).view(1, -1, 1, 1)
        return logits.expand(x.shape[0], -1, *x.shape[-2:]).clone()

    return fn


def ramp_input() -> torch.Tensor:
    return (torch.arange(6).view(1, 6) + 10 * torch.arange(5).view(5, 1)).float().view(1, 1, 5, 6)


def test_multiclass_averages_softmax_probabilities_not_logits():
    # Mean of logits: (1, 0, 0.5) -> class 0.  Softmax (0.9933, 0.0067, 0.0000) and
    # (0.0001, 0.0025, 0.9974) average to (0.4967, 0.0046, 0.4987) -> class 2.
    fn = view_dependent_model({"id": [5.0, 0.0, -5.0], "hflip": [-3.0, 0.0, 6.0]})
    task = Task("multiclass", num_classes=3)
    probs = tta_probabilities(fn, ramp_input(), task, parse_tta("hflip"))
    np.testing.assert_allclose(probs[0, :, 0, 0].numpy(), [0.49669, 0.00458, 0.49873], atol=1e-4)
    labels = task.decode(with_tta(fn, task, parse_tta("hflip"))(ramp_input()))
    assert (labels == 2).all()
    assert (task.decode(torch.tensor([1.0, 0.0, 0.5]).view(1, 3, 1, 1)) == 0).all()  # what logit-averaging gives


def test_binary_averages_sigmoid_probabilities():
    # Logits 4, 4, -12: mean logit -4/3 -> background; sigmoids 0.982, 0.982, 0.000006
    # average to 0.655 -> foreground.
    fn = view_dependent_model({"id": [4.0], "hflip": [4.0], "vflip": [-12.0]})
    task = Task("binary")
    probs = tta_probabilities(fn, ramp_input(), task, parse_tta("hflip,vflip"))
    np.testing.assert_allclose(float(probs[0, 0, 0, 0]), (2 / (1 + np.exp(-4)) + 1 / (1 + np.exp(12))) / 3, rtol=1e-5)
    assert (task.decode(with_tta(fn, task, parse_tta("hflip,vflip"))(ramp_input())) == 1).all()


def test_scale_views_map_back_to_input_size():
    model = symmetric_model()
    x = torch.rand(1, 3, 21, 30)
    task = Task("multilabel", num_classes=4)
    with torch.no_grad():
        probs = tta_probabilities(model, x, task, parse_tta("scale:0.5,1.5"))
    assert probs.shape == (1, 4, 21, 30)
    # A constant image stays constant under resizing: scale TTA must change nothing far from borders.
    flat = torch.full((1, 3, 24, 24), 0.3)
    with torch.no_grad():
        a = tta_probabilities(model, flat, task, parse_tta("scale:0.5,2"))
        b = task.probabilities(model(flat))
    np.testing.assert_allclose(a[..., 8:16, 8:16].numpy(), b[..., 8:16, 8:16].numpy(), atol=1e-5)


@pytest.mark.parametrize("task", [Task("multiclass", num_classes=3), Task("binary"), Task("multilabel", num_classes=3)])
def test_probabilities_to_logits_round_trips(task):
    torch.manual_seed(0)
    logits = torch.randn(2, task.out_channels, 4, 5) * 3
    probs = task.probabilities(logits)
    back = probabilities_to_logits(probs, task)
    np.testing.assert_allclose(task.probabilities(back).numpy(), probs.numpy(), atol=1e-5)
    assert torch.equal(task.decode(back), task.decode(logits))
