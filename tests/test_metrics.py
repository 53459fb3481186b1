"""Metrics: one confusion-matrix core, checked by hand and against scikit-learn."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, jaccard_score, multilabel_confusion_matrix

from pixelwise.errors import TaskError
from pixelwise.metrics import (
    ConfusionMatrix,
    MultilabelConfusion,
    PerImageScores,
    bootstrap_ci,
    confusion_matrix,
    evaluate_label_maps,
    frequency_weighted_iou,
    iou,
    jsonable,
    mean_iou,
    multilabel_confusion,
    summarize,
)

# A 3-class 4x4 example worked by hand (255 = ignored).
#
#   target          pred            pairs (target, pred), row by row
#   0 0 1 1         0 0 1 0         (0,0) (0,0) (1,1) (1,0)
#   0 0 1 1         0 1 1 1         (0,0) (0,1) (1,1) (1,1)
#   2 2 2 255       2 2 1 0         (2,2) (2,2) (2,1)  --
#   2 2 2 255       2 2 2 2         (2,2) (2,2) (2,2)  --
#
# Matrix (rows = target, cols = pred):  [[3,1,0],[1,3,0],[0,1,5]], 14 counted pixels.
# Row sums (support) 4, 4, 6; column sums (predicted) 4, 5, 5.
# pixel accuracy = (3+3+5)/14 = 11/14
# IoU  = tp / (support + predicted - tp): 3/5 = 0.6, 3/6 = 0.5, 5/6     -> mIoU 0.644444
# Dice = 2tp / (support + predicted):     6/8, 6/9, 10/11               -> mean 0.775253
# accuracy (recall) = tp / support:       3/4, 3/4, 5/6                 -> mean 0.777778
# precision = tp / predicted:             3/4, 3/5, 5/5
# fwIoU = (4*0.6 + 4*0.5 + 6*5/6) / 14 = 9.4/14 = 0.671429
TARGET = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255], [2, 2, 2, 255]])
PRED = torch.tensor([[0, 0, 1, 0], [0, 1, 1, 1], [2, 2, 1, 0], [2, 2, 2, 2]])
HAND_MATRIX = [[3, 1, 0], [1, 3, 0], [0, 1, 5]]


def test_hand_computed_matrix_and_scores():
    m = confusion_matrix(PRED, TARGET, 3)
    assert m.dtype == torch.int64 and m.tolist() == HAND_MATRIX
    s = summarize(m, ["a", "b", "c"])
    assert s["pixel_accuracy"] == pytest.approx(11 / 14)
    assert s["miou"] == pytest.approx((0.6 + 0.5 + 5 / 6) / 3)
    assert s["mean_dice"] == pytest.approx((6 / 8 + 6 / 9 + 10 / 11) / 3)
    assert s["mean_accuracy"] == pytest.approx((3 / 4 + 3 / 4 + 5 / 6) / 3)
    assert s["fwiou"] == pytest.approx(9.4 / 14)
    assert frequency_weighted_iou(m) == pytest.approx(9.4 / 14)
    assert [s["per_class"][n]["iou"] for n in "abc"] == pytest.approx([0.6, 0.5, 5 / 6])
    assert [s["per_class"][n]["precision"] for n in "abc"] == pytest.approx([3 / 4, 3 / 5, 1.0])
    assert [s["per_class"][n]["accuracy"] for n in "abc"] == pytest.approx([3 / 4, 3 / 4, 5 / 6])
    assert [s["per_class"][n]["dice"] for n in "abc"] == pytest.approx([6 / 8, 6 / 9, 10 / 11])
    assert [s["per_class"][n]["support"] for n in "abc"] == [4, 4, 6]
    assert s["confusion_matrix"] == HAND_MATRIX


def test_absent_class_rule():
    # Class 3 absent from target and prediction: NaN, left out of every mean.
    m = confusion_matrix(PRED, TARGET, 4)
    s = summarize(m)
    assert math.isnan(s["per_class"]["3"]["iou"]) and math.isnan(s["per_class"]["3"]["dice"])
    assert s["miou"] == pytest.approx((0.6 + 0.5 + 5 / 6) / 3)
    assert s["mean_accuracy"] == pytest.approx((3 / 4 + 3 / 4 + 5 / 6) / 3)
    # Class 3 predicted at one pixel but absent from the target: IoU 0, counted in the mean.
    pred = PRED.clone()
    pred[0, 0] = 3
    s = summarize(confusion_matrix(pred, TARGET, 4))
    assert s["per_class"]["3"]["iou"] == 0.0 and s["per_class"]["3"]["dice"] == 0.0
    assert s["per_class"]["3"]["precision"] == 0.0
    assert math.isnan(s["per_class"]["3"]["accuracy"])  # no target pixels: recall undefined
    # class 0 now: tp 2, support 4, predicted 3 -> IoU 2/5
    assert s["miou"] == pytest.approx((0.4 + 0.5 + 5 / 6 + 0.0) / 4)


def test_everything_ignored_gives_nan_not_an_error():
    s = summarize(confusion_matrix(PRED, torch.full_like(TARGET, 255), 3))
    assert all(math.isnan(s[k]) for k in ("pixel_accuracy", "miou", "fwiou", "mean_dice"))
    assert jsonable(s)["miou"] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    C = 7  # class 6: neither in target nor predicted
    target = rng.integers(0, 5, size=(3, 17, 23))  # class 5 never in the target
    target[rng.random(target.shape) < 0.15] = 255
    pred = np.where(rng.random(target.shape) < 0.6, np.clip(target, 0, 5), rng.integers(0, 6, target.shape))
    pred[target == 255] = rng.integers(0, 6, (target == 255).sum())
    pred[pred == 4] = 3  # class 4 never predicted
    m = confusion_matrix(pred.astype(np.uint8), target.astype(np.uint8), C)
    keep = target != 255
    oracle = sk_confusion_matrix(target[keep], pred[keep], labels=list(range(C)))
    assert m.numpy().tolist() == oracle.tolist()
    ours = iou(m)
    sk = jaccard_score(target[keep], pred[keep], labels=list(range(C)), average=None, zero_division=0)
    undefined = (oracle.sum(0) + oracle.sum(1)) == 0  # sklearn says 0 there, our rule says NaN
    assert undefined.tolist() == [False] * 6 + [True]
    assert np.isnan(ours[undefined]).all()
    np.testing.assert_allclose(ours[~undefined], sk[~undefined])
    s = summarize(m)
    sk_f1 = f1_score(target[keep], pred[keep], labels=list(range(C)), average=None, zero_division=np.nan)
    np.testing.assert_allclose([s["per_class"][str(c)]["dice"] for c in range(C)], sk_f1, equal_nan=True)
    assert s["per_class"]["5"]["iou"] == 0.0  # predicted, never in target


def test_streaming_dtypes_and_numpy_agree():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 5, size=(4, 9, 11))
    target[:, :2] = 255
    pred = rng.integers(0, 5, size=target.shape)
    full = confusion_matrix(pred, target, 5)
    cm = ConfusionMatrix(5)
    for i in range(4):
        cm.update(torch.from_numpy(pred[i]).to(torch.uint8), torch.from_numpy(target[i]).to(torch.int16))
    assert torch.equal(cm.matrix, full)
    assert torch.equal(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 5), full)
    for dtype in (np.uint16, np.int32, np.uint32, np.int8):  # 16-bit PNGs give uint16
        t = np.where(target == 255, 100, target).astype(dtype)
        assert torch.equal(confusion_matrix(pred.astype(dtype), t, 5, ignore_index=100), full)
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_chunked_cpu_path_and_torch_path_agree(monkeypatch):
    from pixelwise.metrics import confusion as core

    rng = np.random.default_rng(4)
    target = rng.integers(0, 7, size=(3, 31, 29)).astype(np.uint8)
    target[0, :5] = 255
    pred = rng.integers(0, 7, size=target.shape).astype(np.uint8)
    whole = confusion_matrix(pred, target, 7)
    monkeypatch.setattr(core, "_CHUNK", 100)  # many chunks, with a ragged last one
    assert torch.equal(confusion_matrix(pred, target, 7), whole)
    # The torch path (used for GPU tensors) gives the same histogram.
    on_torch = core._pair_counts(torch.from_numpy(target), torch.from_numpy(pred), 256, 7)
    assert torch.equal(on_torch[:7], whole)
    assert int(on_torch[255].sum()) == 5 * 29


def test_matches_torchmetrics():
    from torchmetrics.classification import MulticlassConfusionMatrix

    torch.manual_seed(0)
    target = torch.randint(0, 19, (2, 32, 64), dtype=torch.uint8)
    target[:, :4] = 255
    pred = torch.randint(0, 19, (2, 32, 64), dtype=torch.uint8)
    tm = MulticlassConfusionMatrix(num_classes=19, ignore_index=255)
    tm.update(pred.long(), target.long())
    assert torch.equal(confusion_matrix(pred, target, 19), tm.compute())


def test_negative_ignore_index_and_no_ignore():
    target = TARGET.clone()
    target[target == 255] = -1
    assert confusion_matrix(PRED, target, 3, ignore_index=-1).tolist() == HAND_MATRIX
    with pytest.raises(TaskError, match="not ignore_index"):
        confusion_matrix(PRED, TARGET, 3, ignore_index=None)


def test_out_of_range_values_are_errors_only_where_counted():
    with pytest.raises(TaskError, match="target values outside 0..2.*\\[7\\]"):
        confusion_matrix(PRED, torch.where(TARGET == 2, 7, TARGET), 3)
    bad_pred = PRED.clone()
    bad_pred[0, 0] = 9
    with pytest.raises(TaskError, match="predictions outside 0..2.*\\[9\\]"):
        confusion_matrix(bad_pred, TARGET, 3)
    # A tool that writes 255 into its prediction where the target is ignored is fine.
    pred = torch.where(TARGET == 255, 255, PRED)
    assert confusion_matrix(pred, TARGET, 3).tolist() == HAND_MATRIX
    with pytest.raises(TaskError, match="shape"):
        confusion_matrix(PRED[:2], TARGET, 3)
    with pytest.raises(TaskError, match="integer class ids"):
        confusion_matrix(PRED.float(), TARGET, 3)


def test_multilabel_confusion_against_sklearn():
    rng = np.random.default_rng(5)
    target = rng.integers(0, 2, size=(2, 3, 6, 7))
    pred = rng.integers(0, 2, size=target.shape)
    target[0, 1, :2] = 255
    ml = MultilabelConfusion(3)
    ml.update(torch.from_numpy(pred), torch.from_numpy(target))
    for c in range(3):
        t, p = target[:, c].ravel(), pred[:, c].ravel()
        keep = t != 255
        oracle = sk_confusion_matrix(t[keep], p[keep], labels=[0, 1])  # [[tn, fp], [fn, tp]]
        assert ml.matrix[c].tolist() == oracle.tolist()
    # Without ignored elements sklearn's multilabel matrix (per label, [[tn, fp], [fn, tp]]) agrees too.
    flat = lambda a: a[1].reshape(3, -1).T  # image 1 has no ignored elements: (pixels, labels)
    only_second = multilabel_confusion(torch.from_numpy(pred[1:]), torch.from_numpy(target[1:]))
    assert only_second.tolist() == multilabel_confusion_matrix(flat(target), flat(pred)).tolist()
    s = summarize(ml.matrix, ["x", "y", "z"])
    t, p = target[:, 2].ravel(), pred[:, 2].ravel()
    assert s["per_class"]["z"]["iou"] == pytest.approx(jaccard_score(t, p))
    assert s["miou"] == pytest.approx(np.mean([s["per_class"][n]["iou"] for n in "xyz"]))
    # Bootstrap over the two images' multilabel matrices brackets the dataset-level mIoU.
    per_image = torch.stack([multilabel_confusion(torch.from_numpy(pred[i:i + 1]), torch.from_numpy(target[i:i + 1]))
                             for i in range(2)])
    assert torch.equal(per_image.sum(0), ml.matrix)
    low, high = bootstrap_ci(per_image, "miou", n_resamples=200)
    assert low <= s["miou"] <= high


def test_per_image_versus_dataset_level():
    # Image A: the hand example (mIoU 0.6444). Image B: 4 pixels of class 0, all right,
    # classes 1 and 2 absent (NaN) -> image mIoU 1.0. Per-image mean = (0.6444 + 1) / 2.
    scores = PerImageScores(3)
    scores.add(PRED, TARGET, "a")
    scores.add(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), "b")
    np.testing.assert_allclose(scores.miou_values(), [(0.6 + 0.5 + 5 / 6) / 3, 1.0])
    # Dataset level: class 0 gains 4 right pixels: IoU0 = 7/9.
    assert mean_iou(scores.total()) == pytest.approx((7 / 9 + 0.5 + 5 / 6) / 3)
    result = scores.summary(n_resamples=50)
    assert result["per_image_miou"] == pytest.approx(((0.6 + 0.5 + 5 / 6) / 3 + 1.0) / 2)
    assert result["num_images"] == 2
    assert [r["name"] for r in result["per_image"]] == ["a", "b"]


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    scores = PerImageScores(4)
    for _ in range(30):
        t = rng.integers(0, 4, size=(16, 16))
        p = np.where(rng.random(t.shape) < rng.uniform(0.4, 0.9), t, rng.integers(0, 4, t.shape))
        scores.add(p, t)
    point = mean_iou(scores.total())
    low, high = scores.bootstrap_ci("miou", n_resamples=400, seed=1)
    assert low < point < high and high - low < 0.3
    assert (low, high) == scores.bootstrap_ci("miou", n_resamples=400, seed=1)  # seeded
    # An independent oracle: scipy's percentile bootstrap over image indices (its own random
    # draws, so the two agree to Monte-Carlo error, well under the interval's width ~0.09).
    from scipy.stats import bootstrap as scipy_bootstrap

    mats = scores.matrices.numpy()
    oracle = scipy_bootstrap((np.arange(len(mats)),), lambda idx: float(mean_iou(mats[idx.astype(int)].sum(0))),
                             vectorized=False, n_resamples=2000, method="percentile", random_state=0)
    ours = scores.bootstrap_ci("miou", n_resamples=2000, seed=1)
    assert ours == pytest.approx(tuple(oracle.confidence_interval), abs=0.01)
    dlow, dhigh = scores.bootstrap_ci("mean_dice", n_resamples=400, seed=1)
    assert dlow > low  # Dice >= IoU for every class, so its interval sits higher
    # Identical images: every resample is the same data set, the interval collapses.
    same = np.stack([scores.matrices[0].numpy()] * 5)
    lo, hi = bootstrap_ci(same, "miou", n_resamples=100)
    assert lo == pytest.approx(hi) == pytest.approx(float(mean_iou(same[0])))
    assert all(math.isnan(v) for v in bootstrap_ci(np.zeros((0, 4, 4)), "miou"))


def test_evaluate_label_maps_keys():
    result = evaluate_label_maps([PRED, PRED], [TARGET, TARGET], 3, class_names=["a", "b", "c"], n_resamples=20)
    for key in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou", "mean_dice", "per_class", "per_image_miou",
                "miou_ci", "mean_dice_ci", "confusion_matrix", "num_images"):
        assert key in result
    assert set(result["per_class"]["a"]) == {"iou", "dice", "accuracy", "precision", "support"}
    assert result["confusion_matrix"] == [[2 * v for v in row] for row in HAND_MATRIX]


# ------------------------------------------------------------ distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank: int, world: int, port: int, preds, targets, out_path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cm = ConfusionMatrix(5)
        for p, t in zip(preds[rank::world], targets[rank::world]):  # each rank sees its own shard
            cm.update(p, t)
        cm.all_reduce()
        torch.save(cm.matrix, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two fresh interpreters import torch: ~10-20 s on a busy 2-core machine
def test_all_reduce_with_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(0)
    targets = [torch.randint(0, 5, (12, 12), generator=g) for _ in range(5)]
    for t in targets:
        t[:2] = 255
    preds = [torch.randint(0, 5, (12, 12), generator=g) for _ in range(5)]
    out = str(tmp_path / "matrix")
    mp.spawn(_dist_worker, args=(2, _free_port(), preds, targets, out), nprocs=2, join=True)
    single = ConfusionMatrix(5)
    for p, t in zip(preds, targets):
        single.update(p, t)
    for rank in range(2):
        assert torch.equal(torch.load(f"{out}.{rank}"), single.matrix)
