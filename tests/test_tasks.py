"""Tasks: activation, decoding, conversions and the checks that catch users' mistakes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pixelwise.errors import TaskError
from pixelwise.tasks import (
    Task,
    labels_to_color,
    looks_interpolated,
    one_hot,
    one_hot_to_labels,
    two_channel_to_binary_logits,
)


# ------------------------------------------------------------- seed example
@pytest.fixture
def seed(seed_examples_path):
    data = json.loads(seed_examples_path.read_text())
    data["x"] = torch.tensor(data["logits"]).unsqueeze(0)  # (1, 4, 2, 2)
    return data


def test_seed_sigmoid_matches_reference(seed):
    task = Task("multilabel", num_classes=4)
    got = task.probabilities(seed["x"])[0]
    assert torch.allclose(got, torch.tensor(seed["sigmoid"]), atol=6e-5)


def test_seed_softmax_over_channels_matches_reference(seed):
    task = Task("multiclass", num_classes=4)
    got = task.probabilities(seed["x"])[0]
    assert torch.allclose(got, torch.tensor(seed["softmax_channel"]), atol=6e-5)
    assert torch.allclose(got.sum(dim=0), torch.ones(2, 2))


@pytest.mark.parametrize("key, dim", [("softmax_height", 2), ("softmax_width", 3)])
def test_seed_softmax_over_space_is_the_reference_bug(seed, key, dim):
    # The reference tables are what the common bug computes; our check must reject them.
    wrong = torch.softmax(seed["x"], dim=dim)[0]
    assert torch.allclose(wrong, torch.tensor(seed[key]), atol=6e-5)
    with pytest.raises(TaskError, match="height" if dim == 2 else "width"):
        Task("multiclass", 4).check_logits(wrong.unsqueeze(0))


def test_seed_argmax_and_names(seed):
    task = Task("multiclass", num_classes=4)
    labels = task.decode(seed["x"])[0]
    assert labels.tolist() == seed["argmax_channel"]
    names = [[seed["classes"][i] for i in row] for row in labels.tolist()]
    assert names == seed["argmax_channel_names"]
    assert torch.equal(task.decode_probabilities(task.probabilities(seed["x"])), task.decode(seed["x"]))


def test_seed_softmax_given_instead_of_logits_is_rejected(seed):
    probs = torch.tensor(seed["softmax_channel"]).unsqueeze(0)
    with pytest.raises(TaskError, match="softmax was applied before"):
        Task("multiclass", 4).check_logits(probs)
    Task("multiclass", 4).check_logits(seed["x"])  # raw logits pass


# --------------------------------------------------------------- the Task
def test_out_channels_and_defaults():
    assert Task("binary").out_channels == 1 and Task("binary").num_classes == 2
    assert Task("multiclass", 11).out_channels == 11
    assert Task("multilabel", 5).out_channels == 5
    assert Task("multiclass", 3).ignore_index == 255


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="semantic", num_classes=3), "unknown task kind"),
    (dict(kind="binary", num_classes=3), "num_classes=2"),
    (dict(kind="multiclass", num_classes=1), "more classes"),
    (dict(kind="multiclass", num_classes=4, ignore_index=2), "collides"),
    (dict(kind="multilabel", num_classes=3, threshold=(0.5, 0.5)), "2 values"),
    (dict(kind="multiclass", num_classes=3, threshold=(0.5, 0.5, 0.5)), "only meaningful"),
    (dict(kind="binary", threshold=1.5), "strictly between"),
])
def test_invalid_tasks(kwargs, match):
    with pytest.raises(TaskError, match=match):
        Task(**kwargs)


@pytest.mark.parametrize("task", [
    Task("binary", threshold=0.3),
    Task("multiclass", 19, ignore_index=-1),
    Task("multilabel", 3, threshold=(0.2, 0.5, 0.9)),
])
def test_dict_round_trip_is_json_safe(task):
    d = json.loads(json.dumps(task.to_dict()))
    assert Task.from_dict(d) == task


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(TaskError, match="unknown task keys"):
        Task.from_dict({"kind": "binary", "classes": 2})


def test_binary_decode_uses_threshold():
    logits = torch.tensor([-2.0, -0.1, 0.1, 2.0]).view(1, 1, 1, 4)
    assert Task("binary").decode(logits).tolist() == [[[0, 0, 1, 1]]]
    # sigmoid(0.1) = 0.525 < 0.6, sigmoid(2) = 0.88 > 0.6
    assert Task("binary", threshold=0.6).decode(logits).tolist() == [[[0, 0, 0, 1]]]
    assert Task("binary").decode(logits).dtype == torch.int64


def test_multilabel_decode_per_class_threshold():
    # probabilities 0.5 +- : logit 0 -> 0.5; per-class thresholds 0.4 and 0.6
    logits = torch.zeros(1, 2, 1, 1)
    out = Task("multilabel", 2, threshold=(0.4, 0.6)).decode(logits)
    assert out.dtype == torch.uint8 and out.flatten().tolist() == [1, 0]


def test_two_channel_softmax_equals_one_channel_sigmoid():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 5, 7, dtype=torch.float64) * 5
    soft = torch.softmax(logits, dim=1)[:, 1:2]
    binary = two_channel_to_binary_logits(logits)
    assert binary.shape == (2, 1, 5, 7)
    assert torch.allclose(torch.sigmoid(binary), soft, atol=1e-12)
    # Random float64 logits have no ties: thresholding at 0.5 == argmax of the 2 channels.
    assert torch.equal(Task("binary").decode(binary), Task("multiclass", 2).decode(logits))
    with pytest.raises(TaskError, match="2-channel"):
        two_channel_to_binary_logits(torch.randn(1, 3, 2, 2))


def test_probabilities_are_float32_under_bf16():
    logits = torch.randn(1, 3, 4, 4).bfloat16()
    assert Task("multiclass", 3).probabilities(logits).dtype == torch.float32


# ----------------------------------------------------------- logits checks
def test_check_logits_channel_messages():
    with pytest.raises(TaskError, match="two_channel_to_binary_logits"):
        Task("binary").check_logits(torch.randn(1, 2, 4, 4))
    with pytest.raises(TaskError, match="expects 5 logit channel"):
        Task("multiclass", 5).check_logits(torch.randn(1, 4, 4, 4))
    with pytest.raises(TaskError, match="floating point"):
        Task("multiclass", 3).check_logits(torch.zeros(1, 3, 4, 4, dtype=torch.long))
    with pytest.raises(TaskError, match="NaN"):
        Task("multiclass", 3).check_logits(torch.full((1, 3, 2, 2), float("nan")))


def test_check_logits_accepts_logits_in_unit_range_that_are_not_a_softmax():
    # Small positive logits (e.g. an untrained model) are not flagged.
    x = torch.rand(2, 3, 8, 8) * 0.2
    Task("multiclass", 3).check_logits(x)
    Task("multilabel", 3).check_logits(x)


def test_check_logits_bf16_softmax_is_caught():
    probs = torch.softmax(torch.randn(2, 4, 8, 8), dim=1).bfloat16()
    with pytest.raises(TaskError, match="before"):
        Task("multiclass", 4).check_logits(probs)


# ----------------------------------------------------------- target checks
def test_check_target_ok_and_out_of_range():
    task = Task("multiclass", 3)
    ok = torch.tensor([[[0, 1], [2, 255]]])
    task.check_target(ok)
    with pytest.raises(TaskError, match="outside 0..2.*: 3, 7"):
        task.check_target(torch.tensor([[[0, 3], [7, 1]]]))


def test_check_target_one_hot_where_indices_expected():
    t = one_hot(torch.randint(0, 4, (2, 5, 5)), 4)
    with pytest.raises(TaskError, match="one-hot"):
        Task("multiclass", 4).check_target(t.long())
    with pytest.raises(TaskError, match="channel axis of size 1"):
        Task("binary").check_target(torch.zeros(2, 1, 4, 4, dtype=torch.long))


def test_check_target_indices_where_multilabel_expected():
    with pytest.raises(TaskError, match="multiclass task"):
        Task("multilabel", 3).check_target(torch.randint(0, 3, (2, 5, 5)))
    with pytest.raises(TaskError, match="0 or 1"):
        Task("multilabel", 2).check_target(torch.full((1, 2, 3, 3), 2))
    Task("multilabel", 2).check_target(torch.randint(0, 2, (1, 2, 3, 3)).float())


def test_check_target_float_masks():
    with pytest.raises(TaskError, match="scaled to \\[0, 1\\]"):
        Task("binary").check_target(torch.tensor([[[0.0, 1 / 255], [1.0, 0.0]]]))
    with pytest.raises(TaskError, match=r"\.long\(\)"):
        Task("binary").check_target(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))


def test_check_target_binary_0_255_mask_hint():
    task = Task("binary", ignore_index=-100)
    with pytest.raises(TaskError, match="divide by 255"):
        task.check_target(torch.tensor([[[0, 255], [255, 0]]]))


def _bilinear_resized_binary_mask() -> np.ndarray:
    from PIL import Image

    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    return np.array(Image.fromarray(mask).resize((45, 45), Image.BILINEAR))


def test_looks_interpolated_on_a_really_resized_mask():
    resized = _bilinear_resized_binary_mask()
    assert len(np.unique(resized)) > 2  # bilinear made intermediate values
    assert looks_interpolated(resized, [0, 255])
    with pytest.raises(TaskError, match="bilinear"):
        Task("multiclass", 2, ignore_index=255).check_target(torch.from_numpy(resized).long().unsqueeze(0))


def test_looks_interpolated_multiclass_edges_and_negatives():
    from PIL import Image

    ids = np.zeros((20, 20), dtype=np.uint8)
    ids[:, 10:] = 4  # class 0 | class 4: bilinear puts 1, 2, 3 along the edge
    resized = np.array(Image.fromarray(ids).resize((33, 33), Image.BILINEAR))
    assert looks_interpolated(resized, [0, 4])
    nearest = np.array(Image.fromarray(ids).resize((33, 33), Image.NEAREST))
    assert not looks_interpolated(nearest, [0, 4])
    # A whole region with an unknown id is a labelling problem, not interpolation.
    block = ids.copy()
    block[2:8, 2:8] = 2
    assert not looks_interpolated(block, [0, 4])
    assert not looks_interpolated(ids, [0, 1, 2, 3, 4])


# ------------------------------------------------------------- conversions
def test_one_hot_round_trip_with_ignore():
    labels = torch.tensor([[[0, 2], [255, 1]]])
    oh = one_hot(labels, 3, ignore_index=255)
    assert oh.shape == (1, 3, 2, 2)
    assert oh[0, :, 1, 0].tolist() == [0, 0, 0]  # ignored pixel: all zeros
    assert oh[0, :, 0, 1].tolist() == [0, 0, 1]
    assert torch.equal(one_hot_to_labels(oh, ignore_index=255), labels)
    with pytest.raises(TaskError, match="outside"):
        one_hot(torch.tensor([[3]]), 3)


def test_labels_to_color():
    colors = [(10, 20, 30), (40, 50, 60)]
    out = labels_to_color(torch.tensor([[0, 1], [255, 1]]), colors, ignore_color=(1, 2, 3))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out.tolist() == [[[10, 20, 30], [40, 50, 60]], [[1, 2, 3], [40, 50, 60]]]
    assert labels_to_color(np.array([[-1]]), colors).tolist() == [[[0, 0, 0]]]
