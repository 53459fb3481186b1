"""Segmentation losses as pure functions: `loss(logits, target, task, ...) -> scalar`.

Every function takes raw logits `(N, out_channels, *spatial)` and the task's target form
(binary/multiclass `(N, *spatial)` ids, multilabel `(N, C, *spatial)` 0/1), honours
`task.ignore_index` (ignored pixels count nowhere, numerator or denominator), and computes in
float32 even under bf16 autocast (float64 inputs stay float64, for gradcheck). A batch where
every pixel is ignored, or a class absent from the batch, gives a finite loss, never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelwise.errors import ConfigError, TaskError
from pixelwise.tasks import Task


def _float(x: Tensor) -> Tensor:
    # Reductions in bf16 lose whole pixels' worth of loss; float64 is kept for gradcheck.
    return x if x.dtype == torch.float64 else x.float()


def _zero(logits: Tensor) -> Tensor:
    """A zero that still belongs to the graph (backward works, gradients are 0)."""
    return logits.sum() * 0.0


def _check_shapes(logits: Tensor, target: Tensor, task: Task) -> None:
    if logits.ndim < 2 or logits.shape[1] != task.out_channels:
        raise TaskError(
            f"{task.kind} loss expects logits (N, {task.out_channels}, H, W), got {tuple(logits.shape)}"
        )
    want = logits.shape if task.kind == "multilabel" else logits.shape[:1] + logits.shape[2:]
    if target.shape != want:
        raise TaskError(
            f"{task.kind} target must have shape {tuple(want)} for logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if task.kind != "multilabel" and target.is_floating_point():
        raise TaskError(f"{task.kind} target must be integer class ids, got {target.dtype}")


def dense_target(logits: Tensor, target: Tensor, task: Task) -> tuple[Tensor, Tensor]:
    """The target as float channels like the logits, and the mask of counted elements.

    Returns (t, valid), both (N, out_channels, *spatial); t is 0 wherever valid is False.
    binary: the foreground channel; multiclass: one-hot; multilabel: the target itself.
    """
    _check_shapes(logits, target, task)
    _check_ids(target, task)
    dtype = _float(logits).dtype
    if task.kind == "multilabel":
        valid = target != task.ignore_index
        t = torch.where(valid, target, torch.zeros_like(target)).to(dtype)
        return t, valid
    valid = (target != task.ignore_index).unsqueeze(1)  # (N, 1, *spatial)
    ids = torch.where(valid[:, 0], target, torch.zeros_like(target)).long()
    if task.kind == "binary":
        t = ids.unsqueeze(1).to(dtype)
    else:
        t = F.one_hot(ids, task.num_classes).movedim(-1, 1).to(dtype)
    t = t * valid
    return t, valid.expand_as(t)


def _check_ids(target: Tensor, task: Task) -> None:
    """Out-of-range ids make torch fail deep inside a kernel; say what is wrong instead."""
    if task.kind == "multilabel" or target.numel() == 0:
        return
    bad = (target < 0) | (target >= task.num_classes)
    if bool((bad & (target != task.ignore_index)).any()):
        task.check_target(target)  # raises TaskError with the values and a hint
        raise TaskError(f"target ids outside 0..{task.num_classes - 1}")  # pragma: no cover


def _channel_class_weights(class_weights: Tensor, t: Tensor, task: Task) -> Tensor:
    """Per-element weights for sigmoid losses: binary by the pixel's class, else per channel."""
    cw = class_weights.to(device=t.device, dtype=t.dtype)
    if task.kind == "binary":
        if cw.numel() != 2:
            raise TaskError(f"binary class weights are (background, foreground), got {cw.numel()} values")
        return torch.where(t > 0.5, cw[1], cw[0])
    return cw.view(1, -1, *([1] * (t.ndim - 2)))


# ------------------------------------------------------------ cross-entropy
def cross_entropy(logits: Tensor, target: Tensor, task: Task, class_weights: Tensor | None = None,
                  label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over counted pixels.

    multiclass: softmax cross-entropy (log-sum-exp inside), class weights weigh each pixel by its
    target class (the mean divides by the summed weights, as torch does). binary and multilabel:
    "ce" means BCE-with-logits on each sigmoid channel, so one recipe fits every task; for binary,
    `class_weights` (background, foreground) weigh pixels by their class.
    """
    if task.kind != "multiclass":
        return binary_cross_entropy(logits, target, task, class_weights=class_weights,
                                    label_smoothing=label_smoothing)
    _check_shapes(logits, target, task)
    _check_ids(target, task)
    target = target.long()
    if not bool((target != task.ignore_index).any()):
        return _zero(logits)
    x = _float(logits)
    w = None if class_weights is None else class_weights.to(device=x.device, dtype=x.dtype)
    return F.cross_entropy(x, target, weight=w, ignore_index=task.ignore_index, label_smoothing=label_smoothing)


def binary_cross_entropy(logits: Tensor, target: Tensor, task: Task, pos_weight: Tensor | float | None = None,
                         class_weights: Tensor | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Mean BCE-with-logits over counted elements (binary, multilabel; multiclass on one-hot).

    `pos_weight` multiplies the positive term (per channel, or one number); `label_smoothing`
    moves targets to t * (1 - s) + s / 2.
    """
    t, valid = dense_target(logits, target, task)
    x = _float(logits)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    weight = valid.to(x.dtype)
    if class_weights is not None:
        weight = weight * _channel_class_weights(class_weights, t, task)
    pw = None
    if pos_weight is not None:
        pw = torch.as_tensor(pos_weight, device=x.device, dtype=x.dtype)
        pw = pw.view(1, -1, *([1] * (x.ndim - 2))) if pw.ndim == 1 else pw
    total = F.binary_cross_entropy_with_logits(x, t, weight=weight, pos_weight=pw, reduction="sum")
    denom = weight.sum()
    return total / denom.clamp_min(torch.finfo(x.dtype).tiny) if bool(denom > 0) else _zero(logits)


# -------------------------------------------------------------------- focal
def focal_loss(logits: Tensor, target: Tensor, task: Task, gamma: float = 2.0,
               alpha: float | Tensor | None = None, class_weights: Tensor | None = None) -> Tensor:
    """Focal loss (Lin et al.): cross-entropy scaled by (1 - p_true)^gamma, mean over counted pixels.

    multiclass: softmax form, `alpha` / `class_weights` (C,) weigh each pixel by its target
    class. binary/multilabel: sigmoid form, `alpha` weighs positives and (1 - alpha) negatives.
    Weights multiply the per-pixel term; the mean divides by the number of counted pixels (as
    the RetinaNet paper and torchvision's sigmoid_focal_loss do). gamma = 0 gives (weighted) CE.
    """
    x = _float(logits)
    if task.kind == "multiclass":
        _check_shapes(logits, target, task)
        _check_ids(target, task)
        valid = target != task.ignore_index
        ids = torch.where(valid, target, torch.zeros_like(target)).long()
        logp = F.log_softmax(x, dim=1).gather(1, ids.unsqueeze(1)).squeeze(1)  # (N, *spatial)
        loss = -((1.0 - logp.exp()) ** gamma) * logp
        count = valid.to(x.dtype)
        weight = count
        if alpha is not None and not isinstance(alpha, Tensor):
            raise ConfigError("focal loss: a single alpha applies to binary and multilabel tasks; for multiclass "
                              "give per-class weights (a tensor alpha or class_weights)")
        if isinstance(alpha, Tensor) and class_weights is not None:
            raise ConfigError("focal loss: give per-class weights once, as alpha or as class_weights, not both")
        cw = class_weights if class_weights is not None else alpha
        if cw is not None:
            weight = weight * cw.to(device=x.device, dtype=x.dtype)[ids]
    else:
        t, valid = dense_target(logits, target, task)
        bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_true = torch.exp(-bce)  # exp(-BCE) is the probability given to the true label, stably
        loss = ((1.0 - p_true) ** gamma) * bce
        count = valid.to(x.dtype)
        weight = count
        if alpha is not None:
            weight = weight * (alpha * t + (1.0 - alpha) * (1.0 - t))
        if class_weights is not None:
            weight = weight * _channel_class_weights(class_weights, t, task)
    denom = count.sum()
    if not bool(denom > 0):
        return _zero(logits)
    return (loss * weight).sum() / denom


# ------------------------------------------------------- overlap (soft) losses
def soft_counts(logits: Tensor, target: Tensor, task: Task, per_image: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Soft (tp, fp, fn) per class from probabilities, ignored pixels left out entirely.

    Shapes: (C,) summed over the batch, or (N, C) with per_image=True. Binary counts the
    foreground channel only (C = 1).
    """
    t, valid = dense_target(logits, target, task)
    x = _float(logits)
    p = torch.softmax(x, dim=1) if task.kind == "multiclass" else torch.sigmoid(x)
    p = p * valid
    dims = tuple(range(2, x.ndim)) if per_image else (0, *range(2, x.ndim))
    tp = (p * t).sum(dims)
    fp = (p * (1.0 - t) * valid).sum(dims)
    fn = ((1.0 - p) * t).sum(dims)
    return tp, fp, fn


def _mean_score_loss(score: Tensor) -> Tensor:
    return 1.0 - score.mean()


def dice_loss(logits: Tensor, target: Tensor, task: Task, smooth: float = 1.0, per_image: bool = False) -> Tensor:
    """1 - mean soft Dice (2tp + s) / (2tp + fp + fn + s), over classes (and images if per_image).

    A class absent from target and prediction scores 1 (it contributes no loss); with smooth=0
    such a class also scores 1 instead of 0/0.
    """
    tp, fp, fn = soft_counts(logits, target, task, per_image)
    num, den = 2 * tp + smooth, 2 * tp + fp + fn + smooth
    score = torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(den))
    return _mean_score_loss(score)


def jaccard_loss(logits: Tensor, target: Tensor, task: Task, smooth: float = 1.0, per_image: bool = False) -> Tensor:
    """1 - mean soft IoU (tp + s) / (tp + fp + fn + s)."""
    tp, fp, fn = soft_counts(logits, target, task, per_image)
    num, den = tp + smooth, tp + fp + fn + smooth
    score = torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(den))
    return _mean_score_loss(score)


def tversky_loss(logits: Tensor, target: Tensor, task: Task, alpha: float = 0.3, beta: float = 0.7,
                 smooth: float = 1.0, per_image: bool = False) -> Tensor:
    """1 - mean Tversky index (tp + s) / (tp + alpha fp + beta fn + s).

    alpha = beta = 0.5 is Dice, alpha = beta = 1 is Jaccard; beta > alpha punishes misses more.
    """
    tp, fp, fn = soft_counts(logits, target, task, per_image)
    num, den = tp + smooth, tp + alpha * fp + beta * fn + smooth
    score = torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(den))
    return _mean_score_loss(score)
