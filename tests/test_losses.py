"""Losses: hand-computed values, ignore_index, stability at extreme logits, gradcheck, autocast, build_loss."""

from __future__ import annotations

import math

import pytest
import torch

from pixelwise.errors import ConfigError, TaskError
from pixelwise.losses import (
    WeightedSum,
    binary_cross_entropy,
    build_loss,
    class_weights_from_counts,
    cross_entropy,
    dice_loss,
    focal_loss,
    jaccard_loss,
    tversky_loss,
)
from pixelwise.tasks import Task

BINARY, MULTI, MULTILABEL = Task("binary"), Task("multiclass", 3), Task("multilabel", 3)
LN2, LN3 = math.log(2.0), math.log(3.0)
ALL_LOSSES = [cross_entropy, binary_cross_entropy, dice_loss, jaccard_loss, focal_loss, tversky_loss]


def _example(task: Task, n: int = 2, h: int = 4, w: int = 5, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, task.out_channels, h, w, generator=g, dtype=dtype)
    if task.kind == "multilabel":
        target = torch.randint(0, 2, (n, task.num_classes, h, w), generator=g)
        target[0, 0, 0] = 255
    else:
        target = torch.randint(0, task.num_classes, (n, h, w), generator=g)
        target[0, 0] = 255
    return logits, target


# ------------------------------------------------------ hand-computed values
# Binary, 4 pixels, every logit 0 (p = 0.5); targets 1, 0, 1, ignored.
#   BCE per pixel = ln 2                         -> mean ln 2; pos_weight 3: (3+1+3) ln2 / 3
#   soft counts (ignored pixel out): tp = 0.5 + 0.5 = 1, fp = 0.5, fn = 0.5 + 0.5 = 1
#   Dice (smooth 0) = 2*1 / (2 + 0.5 + 1) = 4/7   -> loss 3/7
#   IoU  (smooth 0) = 1 / 2.5 = 0.4               -> loss 0.6
#   Tversky(0.3, 0.7) = 1 / (1 + 0.15 + 0.7)      -> loss 1 - 1/1.85
#   Focal gamma 2: (1 - 0.5)^2 ln 2 = ln2 / 4; alpha 0.25: (0.25 + 0.75 + 0.25) / 3 * ln2 / 4
B_LOGITS = torch.zeros(1, 1, 1, 4)
B_TARGET = torch.tensor([[[1, 0, 1, 255]]])


@pytest.mark.parametrize("fn, kwargs, expected", [
    (binary_cross_entropy, {}, LN2),
    (binary_cross_entropy, {"pos_weight": 3.0}, 7 * LN2 / 3),
    (cross_entropy, {}, LN2),  # binary "ce" is BCE-with-logits
    (dice_loss, {"smooth": 0.0}, 3 / 7),
    (jaccard_loss, {"smooth": 0.0}, 0.6),
    (tversky_loss, {"smooth": 0.0}, 1 - 1 / 1.85),
    (focal_loss, {"gamma": 2.0}, LN2 / 4),
    (focal_loss, {"gamma": 2.0, "alpha": 0.25}, 1.25 / 3 * LN2 / 4),
])
def test_binary_hand_values(fn, kwargs, expected):
    assert fn(B_LOGITS, B_TARGET, BINARY, **kwargs).item() == pytest.approx(expected, rel=1e-6)


# Multiclass, 2 classes, one counted pixel with logits (0, ln 3): softmax (1/4, 3/4), target 1;
# a second pixel is ignored (its logits are huge and wrong, and must not matter).
#   CE = -ln(3/4)
#   label smoothing 0.1: 0.9 * -ln(3/4) + 0.1 * mean_k(-ln p_k) = 0.9*-ln.75 + 0.05*(-ln.25 - ln.75)
#   focal gamma 2: (1/4)^2 * -ln(3/4)
#   class weights (5, 2): weighted mean over one pixel of class 1 = CE again
M_LOGITS = torch.tensor([[[[0.0, 50.0]], [[LN3, -50.0]]]])  # (1, 2, 1, 2)
M_TARGET = torch.tensor([[[1, 255]]])
TWO = Task("multiclass", 2)


@pytest.mark.parametrize("fn, kwargs, expected", [
    (cross_entropy, {}, -math.log(0.75)),
    (cross_entropy, {"label_smoothing": 0.1}, 0.9 * -math.log(0.75) + 0.05 * (-math.log(0.25) - math.log(0.75))),
    (cross_entropy, {"class_weights": torch.tensor([5.0, 2.0])}, -math.log(0.75)),
    (focal_loss, {"gamma": 2.0}, (0.25 ** 2) * -math.log(0.75)),
    (focal_loss, {"gamma": 0.0}, -math.log(0.75)),
])
def test_multiclass_hand_values(fn, kwargs, expected):
    assert fn(M_LOGITS, M_TARGET, TWO, **kwargs).item() == pytest.approx(expected, rel=1e-6)


# ------------------------------------- hand values at non-zero logits, every task and loss
# The logits are logs of small ratios so that every probability is a short decimal:
#   sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4, sigmoid(ln 4) = 4/5, sigmoid(-ln 4) = 1/5,
#   sigmoid(ln 2) = 2/3, sigmoid(0) = 1/2, softmax(ln a, ln b, ln c) = (a, b, c) / (a + b + c).
# A sign slip in a sigmoid swaps p and 1 - p, a wrong softmax axis or a fp/fn swap moves the
# soft counts: every value below changes. The expected numbers use these probabilities, typed
# in by hand, and math.log only (no project helper, no soft_counts()). The ignored pixel's
# logits are large and wrong, so counting it anywhere would show.
LN4 = math.log(4.0)


def nll(p: float) -> float:
    return -math.log(p)


# Binary: 1x4 image, logits (ln 3, -ln 4, -ln 3, 7), targets (1, 0, 1, ignored).
#   p = sigmoid = (.75, .2, .25); probability of the true label pt = (.75, .8, .25)
#   BCE mean = (nll .75 + nll .8 + nll .25) / 3; pos_weight 3 triples the positive terms, the
#   mean still divides by the 3 counted pixels.
#   soft counts: tp = .75 + .25 = 1, fp = .2, fn = (1 - .75) + (1 - .25) = 1
#   Dice s=0: 2*1 / (2 + .2 + 1) = 2/3.2;  s=1: (2 + 1) / (3.2 + 1) = 3/4.2
#   IoU  s=0: 1 / (1 + .2 + 1) = 1/2.2;    s=1: (1 + 1) / (2.2 + 1) = 2/3.2
#   Tversky(.3, .7) s=0: 1 / (1 + .3*.2 + .7*1) = 1/1.76; (.7, .3): 1 / (1 + .14 + .3) = 1/1.44
#   focal g=2: (1 - pt)^2 nll(pt): (.25^2 nll .75 + .2^2 nll .8 + .75^2 nll .25) / 3
#   focal alpha .25: positives weigh .25, the negative .75; still divided by 3
B2_LOGITS = torch.tensor([[[[LN3, -LN4, -LN3, 7.0]]]])  # (1, 1, 1, 4)
B2_TARGET = torch.tensor([[[1, 0, 1, 255]]])
B2_BCE = (nll(0.75) + nll(0.8) + nll(0.25)) / 3
B2_FOCAL_TERMS = [0.25 ** 2 * nll(0.75), 0.2 ** 2 * nll(0.8), 0.75 ** 2 * nll(0.25)]

# Multiclass, 3 classes, 1x4 image:
#   pixel 1 logits (0, ln 2, 0)  -> softmax (1, 2, 1)/4 = (.25, .5, .25), target 1
#   pixel 2 logits (ln 3, 0, 0)  -> (3, 1, 1)/5 = (.6, .2, .2),          target 0
#   pixel 3 logits (0, 0, ln 2)  -> (1, 1, 2)/4 = (.25, .25, .5),        target 0 (predicted 2)
#   pixel 4 logits (40, -40, 0), ignored
#   pt = (.5, .6, .25); CE = (nll .5 + nll .6 + nll .25) / 3
#   class weights (1, 2, 4) weigh pixels by target class 2, 1, 1 and divide by their sum 4
#   label smoothing .1 (torch): .9 nll(pt) + .1/3 sum_k nll(p_k), per pixel, then the mean
#   soft counts per class (c0, c1, c2):
#     tp = (.6 + .25, .5, 0)               = (.85, .5, 0)
#     fp = (.25, .2 + .25, .25 + .2 + .5)   = (.25, .45, .95)
#     fn = ((1-.6) + (1-.25), 1 - .5, 0)   = (1.15, .5, 0)
#   Dice s=0: (1.7/3.1, 1/1.95, 0/.95);  s=1: (2.7/4.1, 2/2.95, 1/1.95)
#   IoU  s=0: (.85/2.25, .5/1.45, 0)
#   Tversky(.3, .7) s=0: .85/(.85 + .075 + .805), .5/(.5 + .135 + .35), 0 = (.85/1.73, .5/.985, 0)
#   focal g=2: (.5^2 nll .5 + .4^2 nll .6 + .75^2 nll .25) / 3
#   BCE on the one-hot target (sigmoid of each logit: s(0)=.5, s(ln 2)=2/3, s(ln 3)=.75), 9 elements:
#     pixel 1 t=(0,1,0): nll(1-.5) + nll(2/3) + nll(1-.5)
#     pixel 2 t=(1,0,0): nll(.75) + nll(.5) + nll(.5)
#     pixel 3 t=(1,0,0): nll(.5) + nll(.5) + nll(1 - 2/3)
M3_LOGITS = torch.tensor([[[[0.0, LN3, 0.0, 40.0]], [[LN2, 0.0, 0.0, -40.0]], [[0.0, 0.0, LN2, 0.0]]]])  # (1, 3, 1, 4)
M3_TARGET = torch.tensor([[[1, 0, 0, 255]]])
M3 = Task("multiclass", 3)
M3_CE = (nll(0.5) + nll(0.6) + nll(0.25)) / 3
M3_SMOOTHED = (0.9 * nll(0.5) + 0.1 / 3 * (nll(0.25) + nll(0.5) + nll(0.25))
               + 0.9 * nll(0.6) + 0.1 / 3 * (nll(0.6) + nll(0.2) + nll(0.2))
               + 0.9 * nll(0.25) + 0.1 / 3 * (nll(0.25) + nll(0.25) + nll(0.5))) / 3
M3_FOCAL_TERMS = [0.5 ** 2 * nll(0.5), 0.4 ** 2 * nll(0.6), 0.75 ** 2 * nll(0.25)]
M3_BCE = (2 * nll(0.5) + nll(2 / 3) + nll(0.75) + 2 * nll(0.5) + 2 * nll(0.5) + nll(1 / 3)) / 9

# Multilabel, 2 classes, 1x3 image:
#   channel 0 logits (ln 3, -ln 3, ln 4), targets (1, 1, 0) -> p (.75, .25, .8),  pt (.75, .25, .2)
#   channel 1 logits (-ln 4, ln 4, 9),    targets (0, 1, ignored) -> p (.2, .8), pt (.8, .8)
#   BCE = (nll .75 + nll .25 + nll .2 + nll .8 + nll .8) / 5
#   pos_weight (2, 3) per channel: 2 nll .75 + 2 nll .25 + nll .2 + nll .8 + 3 nll .8, over 5
#   soft counts: ch0 tp = .75 + .25 = 1, fp = .8, fn = .25 + .75 = 1; ch1 tp = .8, fp = .2, fn = .2
#   Dice s=0: (2/3.8, 1.6/2);  s=1: (3/4.8, 2.6/3)
#   IoU  s=0: (1/2.8, .8/1.2)
#   Tversky(.3, .7) s=0: 1/(1 + .24 + .7) = 1/1.94, .8/(.8 + .06 + .14) = .8
#   focal g=2: (.25^2 nll .75 + .75^2 nll .25 + .8^2 nll .2 + .2^2 nll .8 + .2^2 nll .8) / 5
#   focal alpha .25: weights by target (.25, .25, .75 | .75, .25)
ML_LOGITS = torch.tensor([[[[LN3, -LN3, LN4]], [[-LN4, LN4, 9.0]]]])  # (1, 2, 1, 3)
ML_TARGET = torch.tensor([[[[1, 1, 0]], [[0, 1, 255]]]])
ML = Task("multilabel", 2)
ML_BCE = (nll(0.75) + nll(0.25) + nll(0.2) + nll(0.8) + nll(0.8)) / 5
ML_FOCAL_TERMS = [0.25 ** 2 * nll(0.75), 0.75 ** 2 * nll(0.25), 0.8 ** 2 * nll(0.2), 0.2 ** 2 * nll(0.8),
                  0.2 ** 2 * nll(0.8)]


def _score_loss(*scores: float) -> float:
    return 1 - sum(scores) / len(scores)


NONZERO_CASES = [
    # binary
    ("binary", binary_cross_entropy, {}, B2_BCE),
    ("binary", cross_entropy, {}, B2_BCE),
    ("binary", binary_cross_entropy, {"pos_weight": 3.0}, (3 * nll(0.75) + nll(0.8) + 3 * nll(0.25)) / 3),
    ("binary", dice_loss, {"smooth": 0.0}, _score_loss(2 / 3.2)),
    ("binary", dice_loss, {}, _score_loss(3 / 4.2)),
    ("binary", jaccard_loss, {"smooth": 0.0}, _score_loss(1 / 2.2)),
    ("binary", jaccard_loss, {}, _score_loss(2 / 3.2)),
    ("binary", tversky_loss, {"smooth": 0.0}, _score_loss(1 / 1.76)),
    ("binary", tversky_loss, {"smooth": 0.0, "alpha": 0.7, "beta": 0.3}, _score_loss(1 / 1.44)),
    ("binary", focal_loss, {"gamma": 2.0}, sum(B2_FOCAL_TERMS) / 3),
    ("binary", focal_loss, {"gamma": 2.0, "alpha": 0.25},
     (0.25 * B2_FOCAL_TERMS[0] + 0.75 * B2_FOCAL_TERMS[1] + 0.25 * B2_FOCAL_TERMS[2]) / 3),
    # multiclass
    ("multiclass", cross_entropy, {}, M3_CE),
    ("multiclass", cross_entropy, {"class_weights": torch.tensor([1.0, 2.0, 4.0])},
     (2 * nll(0.5) + nll(0.6) + nll(0.25)) / 4),
    ("multiclass", cross_entropy, {"label_smoothing": 0.1}, M3_SMOOTHED),
    ("multiclass", binary_cross_entropy, {}, M3_BCE),
    ("multiclass", dice_loss, {"smooth": 0.0}, _score_loss(1.7 / 3.1, 1 / 1.95, 0.0)),
    ("multiclass", dice_loss, {}, _score_loss(2.7 / 4.1, 2 / 2.95, 1 / 1.95)),
    ("multiclass", jaccard_loss, {"smooth": 0.0}, _score_loss(0.85 / 2.25, 0.5 / 1.45, 0.0)),
    ("multiclass", tversky_loss, {"smooth": 0.0}, _score_loss(0.85 / 1.73, 0.5 / 0.985, 0.0)),
    ("multiclass", focal_loss, {"gamma": 2.0}, sum(M3_FOCAL_TERMS) / 3),
    ("multiclass", focal_loss, {"gamma": 2.0, "class_weights": torch.tensor([1.0, 2.0, 4.0])},
     (2 * M3_FOCAL_TERMS[0] + M3_FOCAL_TERMS[1] + M3_FOCAL_TERMS[2]) / 3),
    # multilabel
    ("multilabel", binary_cross_entropy, {}, ML_BCE),
    ("multilabel", cross_entropy, {}, ML_BCE),
    ("multilabel", binary_cross_entropy, {"pos_weight": torch.tensor([2.0, 3.0])},
     (2 * nll(0.75) + 2 * nll(0.25) + nll(0.2) + nll(0.8) + 3 * nll(0.8)) / 5),
    ("multilabel", dice_loss, {"smooth": 0.0}, _score_loss(2 / 3.8, 1.6 / 2)),
    ("multilabel", dice_loss, {}, _score_loss(3 / 4.8, 2.6 / 3)),
    ("multilabel", jaccard_loss, {"smooth": 0.0}, _score_loss(1 / 2.8, 0.8 / 1.2)),
    ("multilabel", tversky_loss, {"smooth": 0.0}, _score_loss(1 / 1.94, 0.8)),
    ("multilabel", focal_loss, {"gamma": 2.0}, sum(ML_FOCAL_TERMS) / 5),
    ("multilabel", focal_loss, {"gamma": 2.0, "alpha": 0.25},
     sum(w * f for w, f in zip([0.25, 0.25, 0.75, 0.75, 0.25], ML_FOCAL_TERMS)) / 5),
]
NONZERO_INPUTS = {"binary": (B2_LOGITS, B2_TARGET, BINARY), "multiclass": (M3_LOGITS, M3_TARGET, M3),
                  "multilabel": (ML_LOGITS, ML_TARGET, ML)}


@pytest.mark.parametrize("kind, fn, kwargs, expected", NONZERO_CASES,
                         ids=[f"{c[0]}-{c[1].__name__}-{i}" for i, c in enumerate(NONZERO_CASES)])
def test_hand_values_at_nonzero_logits(kind, fn, kwargs, expected):
    logits, target, task = NONZERO_INPUTS[kind]
    assert fn(logits, target, task, **kwargs).item() == pytest.approx(expected, rel=1e-5)


# Combinations through build_loss, from the single values above (each derived by hand):
#   "ce+dice" uses Dice's default smooth 1; "0.5*ce+2*tversky" with smooth=0 (CE takes no smooth);
#   "focal+jaccard": focal g=2 plus IoU with smooth 1.
@pytest.mark.parametrize("kind, spec, options, expected", [
    ("binary", "ce+dice", {}, B2_BCE + _score_loss(3 / 4.2)),
    ("binary", "0.5*ce+2*tversky", {"smooth": 0.0}, 0.5 * B2_BCE + 2 * _score_loss(1 / 1.76)),
    ("binary", "focal+jaccard", {}, sum(B2_FOCAL_TERMS) / 3 + _score_loss(2 / 3.2)),
    ("multiclass", "ce+dice", {}, M3_CE + _score_loss(2.7 / 4.1, 2 / 2.95, 1 / 1.95)),
    ("multiclass", "0.5*ce+2*tversky", {"smooth": 0.0}, 0.5 * M3_CE + 2 * _score_loss(0.85 / 1.73, 0.5 / 0.985, 0.0)),
    ("multiclass", {"focal": 1.0, "jaccard": {"weight": 3.0, "smooth": 0.0}}, {},
     sum(M3_FOCAL_TERMS) / 3 + 3 * _score_loss(0.85 / 2.25, 0.5 / 1.45, 0.0)),
    ("multilabel", "ce+dice", {}, ML_BCE + _score_loss(3 / 4.8, 2.6 / 3)),
    ("multilabel", "0.5*bce+2*tversky", {"smooth": 0.0}, 0.5 * ML_BCE + 2 * _score_loss(1 / 1.94, 0.8)),
    ("multilabel", "focal+jaccard", {"smooth": 0.0}, sum(ML_FOCAL_TERMS) / 5 + _score_loss(1 / 2.8, 0.8 / 1.2)),
])
def test_combined_losses_by_hand(kind, spec, options, expected):
    logits, target, task = NONZERO_INPUTS[kind]
    assert build_loss(spec, task, **options)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_class_weights_change_the_weighted_mean():
    # Two counted pixels: class 0 with p = 1/2 (loss ln 2), class 1 with p = 3/4.
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, LN3]]]])
    target = torch.tensor([[[0, 1]]])
    w = torch.tensor([3.0, 1.0])
    expected = (3 * LN2 + 1 * -math.log(0.75)) / 4  # torch's weighted mean: divide by summed weights
    assert cross_entropy(logits, target, TWO, class_weights=w).item() == pytest.approx(expected)


def test_dice_ignores_pixels_in_numerator_and_denominator():
    logits = torch.tensor([[[[3.0, -2.0, 1.0, 8.0]]]])
    with_ignored = dice_loss(logits, torch.tensor([[[1, 0, 1, 255]]]), BINARY, smooth=0.0)
    cropped = dice_loss(logits[..., :3], torch.tensor([[[1, 0, 1]]]), BINARY, smooth=0.0)
    assert with_ignored.item() == pytest.approx(cropped.item())


def test_dice_per_image_versus_batch():
    # Image 0 perfect (Dice ~1), image 1 all wrong (Dice ~0): per-image mean 0.5, batch pooled differs.
    logits = torch.tensor([[[[20.0, 20.0]]], [[[20.0, 20.0]]]])
    target = torch.tensor([[[1, 1]], [[0, 0]]])
    assert dice_loss(logits, target, BINARY, smooth=0.0, per_image=True).item() == pytest.approx(0.5, abs=1e-6)
    # pooled: tp = 2, fp = 2, fn = 0 -> Dice = 4/6
    assert dice_loss(logits, target, BINARY, smooth=0.0).item() == pytest.approx(1 - 4 / 6, abs=1e-6)


def test_tversky_special_cases_equal_dice_and_jaccard():
    logits, target = _example(MULTI, seed=3)
    d = dice_loss(logits, target, MULTI, smooth=0.0)
    j = jaccard_loss(logits, target, MULTI, smooth=0.0)
    assert tversky_loss(logits, target, MULTI, alpha=0.5, beta=0.5, smooth=0.0).item() == pytest.approx(d.item())
    assert tversky_loss(logits, target, MULTI, alpha=1.0, beta=1.0, smooth=0.0).item() == pytest.approx(j.item())


def test_focal_gamma_zero_is_cross_entropy_for_every_task():
    for task in (BINARY, MULTI, MULTILABEL):
        logits, target = _example(task, seed=4)
        ce = cross_entropy(logits, target, task)
        assert focal_loss(logits, target, task, gamma=0.0).item() == pytest.approx(ce.item(), rel=1e-5)


def test_multiclass_ce_ignores_ignored_pixels():
    logits, target = _example(MULTI, seed=5)
    full = cross_entropy(logits, target, MULTI)
    changed = logits.clone()
    changed[0, :, 0] = torch.tensor([100.0, -100.0, 0.0]).view(3, 1)  # under the ignored row
    assert cross_entropy(changed, target, MULTI).item() == pytest.approx(full.item())


# --------------------------------------------------------------- stability
@pytest.mark.parametrize("task", [BINARY, MULTI, MULTILABEL], ids=lambda t: t.kind)
@pytest.mark.parametrize("fn", ALL_LOSSES, ids=lambda f: f.__name__)
def test_extreme_logits_absent_classes_and_all_ignored_stay_finite(task, fn):
    logits, target = _example(task, seed=6)
    for scale in (1e4, -1e4):
        x = (torch.sign(logits) * scale).requires_grad_()
        loss = fn(x, target, task)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # Only class 0 present in the target (others absent from the batch).
    absent = torch.zeros_like(target)
    x = logits.clone().requires_grad_()
    loss = fn(x, absent, task)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # Every pixel ignored: a finite loss whose gradient is zero.
    x = logits.clone().requires_grad_()
    loss = fn(x, torch.full_like(target, 255), task)
    loss.backward()
    assert torch.isfinite(loss) and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("task", [BINARY, MULTI, MULTILABEL], ids=lambda t: t.kind)
@pytest.mark.parametrize("fn", ALL_LOSSES, ids=lambda f: f.__name__)
def test_gradcheck_float64(task, fn):
    logits, target = _example(task, n=1, h=2, w=3, seed=7, dtype=torch.float64)
    x = logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: fn(z, target, task), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("task", [BINARY, MULTI, MULTILABEL], ids=lambda t: t.kind)
def test_bf16_autocast_reduces_in_float32(task):
    logits, target = _example(task, seed=8)
    loss_fn = build_loss("ce+dice+focal", task)
    reference = loss_fn(logits, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = logits.bfloat16()
        out = loss_fn(x, target)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(reference.item(), rel=2e-2)


# ---------------------------------------------------------------- build_loss
def test_weighted_sum_spec_matches_the_sum():
    logits, target = _example(MULTI, seed=9)
    loss = build_loss("0.5*ce+1.0*dice", MULTI)
    assert isinstance(loss, WeightedSum)
    expected = 0.5 * cross_entropy(logits, target, MULTI) + dice_loss(logits, target, MULTI)
    assert loss(logits, target).item() == pytest.approx(expected.item())
    assert set(loss.parts(logits, target)) == {"ce", "dice"}


@pytest.mark.parametrize("spec", [
    {"ce": 0.5, "dice": {"weight": 1.0, "smooth": 0.0}},
    {"terms": [{"name": "ce", "weight": 0.5}, {"name": "dice", "smooth": 0.0}]},
    "0.5 * ce + dice",
])
def test_dict_and_string_configs(spec):
    logits, target = _example(MULTI, seed=10)
    kwargs = {} if isinstance(spec, dict) else {"smooth": 0.0}
    loss = build_loss(spec, MULTI, **kwargs)
    expected = 0.5 * cross_entropy(logits, target, MULTI) + dice_loss(logits, target, MULTI, smooth=0.0)
    assert loss(logits, target).item() == pytest.approx(expected.item())


def test_options_go_to_the_terms_that_accept_them():
    logits, target = _example(MULTI, seed=11)
    loss = build_loss("ce+dice", MULTI, label_smoothing=0.2)
    expected = cross_entropy(logits, target, MULTI, label_smoothing=0.2) + dice_loss(logits, target, MULTI)
    assert loss(logits, target).item() == pytest.approx(expected.item())


def test_binary_ce_recipe_is_bce():
    logits, target = _example(BINARY, seed=12)
    assert build_loss("ce", BINARY)(logits, target).item() == pytest.approx(
        build_loss("bce", BINARY)(logits, target).item())


@pytest.mark.parametrize("spec, match", [
    ("lovasz", "unknown loss 'lovasz'; accepted: bce, ce, dice, focal, jaccard, tversky"),
    ("ce+", "cannot read loss term"),
    ("2x*ce", "cannot read loss term"),
    ({"ce": "big"}, "expected a weight"),
    ({"name": "dice", "gamma": 2}, "no option"),
    (3, "string or a dict"),
])
def test_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(spec, MULTI)


def test_unknown_shared_option_and_bad_class_weights():
    with pytest.raises(ConfigError, match="fit none of the terms"):
        build_loss("dice", MULTI, label_smoothing=0.1)
    with pytest.raises(ConfigError, match="3 values"):
        build_loss("ce", MULTI, class_weights=torch.ones(4))


def test_class_weights_are_a_buffer_and_forward_keeps_state():
    loss = build_loss("ce+focal", MULTI, class_weights=torch.tensor([1.0, 2.0, 3.0]))
    assert any(k.endswith("class_weights") for k in loss.state_dict())
    logits, target = _example(MULTI, seed=13)
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    first, second = loss(logits, target), loss(logits, target)
    assert first.item() == second.item()
    assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items())


def test_shape_and_value_mistakes_are_task_errors():
    logits, target = _example(MULTI, seed=14)
    with pytest.raises(TaskError, match="expects logits"):
        cross_entropy(logits[:, :2], target, MULTI)
    with pytest.raises(TaskError, match="target must have shape"):
        dice_loss(logits, target[:, :2], MULTI)
    with pytest.raises(TaskError, match="outside 0..2"):
        cross_entropy(logits, torch.full_like(target, 7), MULTI)


# ---------------------------------------------------------- class weights
def test_class_weights_from_counts_by_hand():
    counts = [10, 20, 0, 70]
    # inverse frequency: total / (present classes * count) = 100 / (3 * count)
    inv = class_weights_from_counts(counts, "inverse_frequency")
    assert inv.tolist() == pytest.approx([100 / 30, 100 / 60, 0.0, 100 / 210])
    # median frequency: freq = .1, .2, .7 -> median .2 -> .2 / freq
    med = class_weights_from_counts(torch.tensor(counts), "median_frequency")
    assert med.dtype == torch.float32 and med.tolist() == pytest.approx([2.0, 1.0, 0.0, 0.2 / 0.7])


def test_median_frequency_uses_images_where_the_class_is_present():
    # SegNet's definition: class 0 only in image 0 (100 px): freq 10/100; class 1 only in
    # image 1: 50/100; class 2 in both: 140/200. median(.1, .5, .7) = .5
    per_image = [[10, 0, 90], [0, 50, 50]]
    w = class_weights_from_counts(per_image)
    assert w.tolist() == pytest.approx([5.0, 1.0, 0.5 / 0.7])
    with pytest.raises(ConfigError, match="accepted: median_frequency, inverse_frequency, inverse_log_frequency"):
        class_weights_from_counts(per_image, "sqrt")


def test_inverse_log_frequency_is_enets_bounded_weighting():
    # ENet: 1 / ln(1.02 + p); p = .1, .2, .7 (class 2 absent gets 0)
    w = class_weights_from_counts([10, 20, 0, 70], "inverse_log_frequency")
    assert w.tolist() == pytest.approx([1 / math.log(1.12), 1 / math.log(1.22), 0.0, 1 / math.log(1.72)], rel=1e-6)
    # a class of 1 pixel in a million stays below 1 / ln(1.02) ~ 50.5
    assert class_weights_from_counts([1, 999_999], "inverse_log_frequency")[0] < 1 / math.log(1.02)


def test_multiclass_focal_refuses_alpha_it_would_ignore():
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    with pytest.raises(ConfigError, match="single alpha applies to binary and multilabel"):
        focal_loss(logits, target, MULTI, alpha=0.25)
    with pytest.raises(ConfigError, match="not both"):
        focal_loss(logits, target, MULTI, alpha=torch.ones(3), class_weights=torch.ones(3))
    # a per-class tensor alpha is the class weights
    assert torch.allclose(focal_loss(logits, target, MULTI, alpha=torch.tensor([1.0, 2.0, 3.0])),
                          focal_loss(logits, target, MULTI, class_weights=torch.tensor([1.0, 2.0, 3.0])))
