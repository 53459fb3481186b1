"""Property-based tests (hypothesis) of the metrics, the task checks and the loaders.

Each property is a law that must hold for every input, checked on ~50 generated cases:
batch-splitting invariance, symmetry of IoU, ignored pixels never counted, totals, ranges,
agreement with scikit-learn, decode(one_hot(x)) == x, and loader round trips.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from pixelwise.data import read_image, read_mask
from pixelwise.errors import TaskError
from pixelwise.metrics import ConfusionMatrix, MultilabelConfusion, dice, iou, summarize
from pixelwise.tasks import Task, one_hot, one_hot_to_labels, two_channel_to_binary_logits

PROPS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
IGNORE = 255


@st.composite
def label_batch(draw, ignore: bool = True) -> tuple[int, np.ndarray, np.ndarray]:
    """(C, pred, target): (N, H, W) uint8 label maps; target has some ignore pixels if asked."""
    C = draw(st.integers(2, 6))
    n, h, w = draw(st.integers(1, 4)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    labels = hnp.arrays(np.uint8, (n, h, w), elements=st.integers(0, C - 1))
    pred, target = draw(labels), draw(labels)
    if ignore:
        mask = draw(hnp.arrays(np.bool_, (n, h, w)))
        target = np.where(mask, IGNORE, target).astype(np.uint8)
    return C, pred, target


def _matrix(pred, target, C) -> torch.Tensor:
    cm = ConfusionMatrix(C, ignore_index=IGNORE)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    return cm.matrix.clone()


# --------------------------------------------------------------------------- metrics
@PROPS
@given(batch=label_batch(), cut=st.integers(0, 4))
def test_confusion_matrix_is_invariant_to_batch_splitting(batch, cut):
    C, pred, target = batch
    cut = min(cut, len(pred))
    whole = _matrix(pred, target, C)
    split = ConfusionMatrix(C, ignore_index=IGNORE)
    for part in (slice(0, cut), slice(cut, None)):  # one part may be empty
        split.update(torch.from_numpy(pred[part]), torch.from_numpy(target[part]))
    per_row = ConfusionMatrix(C, ignore_index=IGNORE)  # one image row at a time
    for p, t in zip(pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])):
        per_row.update(torch.from_numpy(p), torch.from_numpy(t))
    assert torch.equal(whole, split.matrix)
    assert torch.equal(whole, per_row.matrix)


@PROPS
@given(batch=label_batch())
def test_total_is_number_of_non_ignored_pixels_and_matches_sklearn(batch):
    C, pred, target = batch
    m = _matrix(pred, target, C)
    keep = target != IGNORE
    assert int(m.sum()) == int(keep.sum())
    if keep.any():  # scikit-learn refuses empty inputs
        oracle = sk_confusion_matrix(target[keep], pred[keep], labels=list(range(C)))
        assert np.array_equal(m.numpy(), oracle)
    else:
        assert not m.any()


@PROPS
@given(batch=label_batch(), noise=st.integers(0, 2**31 - 1))
def test_predictions_on_ignored_pixels_never_count(batch, noise):
    C, pred, target = batch
    rng = np.random.default_rng(noise)
    other = np.where(target == IGNORE, rng.integers(0, C, size=pred.shape), pred).astype(np.uint8)
    assert torch.equal(_matrix(pred, target, C), _matrix(other, target, C))


@PROPS
@given(batch=label_batch(ignore=False))
def test_iou_and_dice_are_symmetric_in_pred_and_target(batch):
    C, pred, target = batch
    forward, backward = _matrix(pred, target, C), _matrix(target, pred, C)
    assert torch.equal(forward, backward.T)
    np.testing.assert_array_equal(iou(forward), iou(backward))  # NaN in the same places too
    np.testing.assert_array_equal(dice(forward), dice(backward))


@PROPS
@given(batch=label_batch())
def test_per_class_scores_in_unit_interval_or_nan_exactly_when_absent(batch):
    C, pred, target = batch
    m = _matrix(pred, target, C)
    ious, dices = iou(m), dice(m)
    keep = target != IGNORE
    for c in range(C):
        absent = not ((target[keep] == c).any() or (pred[keep] == c).any())
        assert np.isnan(ious[c]) == absent and np.isnan(dices[c]) == absent
        if not absent:
            assert 0.0 <= ious[c] <= 1.0 and 0.0 <= dices[c] <= 1.0
            assert dices[c] >= ious[c] - 1e-12  # Dice = 2 IoU / (1 + IoU) >= IoU
    summary = summarize(m)
    present = ious[~np.isnan(ious)]
    if present.size:
        assert summary["miou"] == pytest.approx(present.mean())
        assert summary["pixel_accuracy"] == pytest.approx(np.trace(m.numpy()) / m.sum().item())
    else:
        assert np.isnan(summary["miou"])


@PROPS
@given(batch=label_batch(ignore=False))
def test_perfect_prediction_scores_one_on_present_classes(batch):
    C, _, target = batch
    s = summarize(_matrix(target, target, C))
    assert s["miou"] == 1.0 and s["pixel_accuracy"] == 1.0 and s["mean_dice"] == 1.0


@PROPS
@given(
    data=st.data(),
    C=st.integers(1, 4),
)
def test_multilabel_confusion_counts_every_non_ignored_element(data, C):
    shape = (data.draw(st.integers(1, 3)), C, data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6)))
    pred = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 1)))
    target = data.draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from([0, 1, IGNORE])))
    cm = MultilabelConfusion(C, ignore_index=IGNORE)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    per_class_total = cm.matrix.sum(dim=(1, 2))
    expected = (target != IGNORE).sum(axis=(0, 2, 3))
    assert per_class_total.tolist() == expected.tolist()
    # tp of class c = pixels where both are 1 (and target not ignored)
    tp = ((pred == 1) & (target == 1)).sum(axis=(0, 2, 3))
    assert cm.matrix[:, 1, 1].tolist() == tp.tolist()


# --------------------------------------------------------------------------- tasks
@PROPS
@given(batch=label_batch(ignore=False))
def test_decode_of_one_hot_is_identity(batch):
    C, _, target = batch
    labels = torch.from_numpy(target).long()
    onehot = one_hot(labels, C)
    assert onehot.shape == (labels.shape[0], C, *labels.shape[1:])
    assert torch.equal(Task("multiclass", C).decode(onehot), labels)
    assert torch.equal(Task("multiclass", C).decode_probabilities(onehot), labels)


@PROPS
@given(batch=label_batch())
def test_one_hot_round_trip_keeps_ignore(batch):
    C, _, target = batch
    labels = torch.from_numpy(target).long()
    onehot = one_hot(labels, C, ignore_index=IGNORE)
    assert torch.equal(onehot.sum(dim=1), (labels != IGNORE).float())  # ignored pixels: all zeros
    assert torch.equal(one_hot_to_labels(onehot, ignore_index=IGNORE), labels)


@PROPS
@given(batch=label_batch(), bad=st.integers(0, 254))
def test_check_target_accepts_valid_and_names_out_of_range_values(batch, bad):
    C, _, target = batch
    task = Task("multiclass", C)
    task.check_target(torch.from_numpy(target).long())  # valid: class ids and ignore
    if bad < C:
        return
    broken = torch.from_numpy(target).long()
    broken.view(-1)[0] = bad
    with pytest.raises(TaskError, match=str(bad)):
        task.check_target(broken)


@PROPS
@given(
    kind=st.sampled_from(["binary", "multiclass", "multilabel"]),
    C=st.integers(2, 5),
    logits=st.data(),
)
def test_decode_equals_decode_probabilities_of_probabilities(kind, C, logits):
    task = Task(kind, 2 if kind == "binary" else C)
    shape = (2, task.out_channels, 3, 3)
    # Integer-valued logits: distinct values stay distinct after softmax, so ties mean the same.
    x = torch.from_numpy(logits.draw(hnp.arrays(np.int8, shape, elements=st.integers(-8, 8))).astype(np.float32))
    task.check_logits(x) if (x.min() < 0 or x.max() > 1) else None
    assert torch.equal(task.decode(x), task.decode_probabilities(task.probabilities(x)))


@PROPS
@given(data=st.data())
def test_two_channel_softmax_equals_one_channel_sigmoid(data):
    x = torch.from_numpy(
        data.draw(hnp.arrays(np.float32, (2, 2, 4, 4), elements=st.floats(-20, 20, width=32)))
    )
    soft = torch.softmax(x.double(), dim=1)[:, 1:2]
    sig = torch.sigmoid(two_channel_to_binary_logits(x).double())
    torch.testing.assert_close(soft, sig, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- loaders
@PROPS
@given(
    mask=hnp.arrays(
        st.sampled_from([np.uint8, np.uint16]),
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    )
)
def test_read_mask_round_trips_uint8_and_uint16_png(tmp_path, mask):
    path = tmp_path / "m.png"
    Image.fromarray(mask).save(path)
    out = read_mask(path)
    assert np.array_equal(out.astype(np.int64), mask.astype(np.int64))


@PROPS
@given(
    image=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3])),
    )
)
def test_read_image_round_trips_png_as_hwc(tmp_path, image):
    path = tmp_path / "i.png"
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out, image)
