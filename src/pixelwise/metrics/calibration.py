"""Calibration of predicted probabilities: ECE, MCE and classwise ECE over pixels, streamed.

Every counted pixel (target != ignore_index) is one prediction. Its top-label confidence is
binned into `n_bins` equal-width bins of [0, 1] (bin b holds [b/B, (b+1)/B); a confidence
of exactly 1 falls in the last bin), and

    ECE = sum_b (n_b / N) |acc_b - conf_b|        MCE = max over non-empty bins |acc_b - conf_b|

where acc_b is the share of correct top labels and conf_b the mean confidence in bin b.
What a "prediction" is depends on the task:

- multiclass: the softmax over C classes; top label = argmax.
- binary: the two-class distribution (1 - p, p); top label = p > 0.5. This is the
  probability's own calibration, independent of the task's decision threshold.
- multilabel: every (pixel, class) element is a binary prediction as above; an element whose
  target is ignore_index is left out.

Classwise ECE (Kull et al. 2019) bins each class's own probability p_k against whether the
pixel is of class k (for multilabel: whether the element is positive) and averages the
per-class ECEs over the classes with counted pixels.

Sums are float64 and add up across batches and across torch.distributed processes, so a
sharded evaluation gives the same numbers as one process.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from pixelwise.tasks import Task

DEFAULT_BINS = 15
# Pixels handled at once: the per-pixel intermediates (probabilities, bin indices, float64
# weights) of a 3000x3000 image would otherwise cost ~1 GB on top of the logits.
SLAB_PIXELS = 1 << 20


def pixel_slabs(logits: Tensor, target: Tensor, max_pixels: int = SLAB_PIXELS):
    """Yield (logits, target) pieces of at most ~max_pixels pixels: per image, bands of rows.

    logits (N, K, H, W); target (N, H, W), or (N, C, H, W) for multilabel."""
    n, _, height, width = logits.shape
    rows = max(1, max_pixels // max(width, 1))
    for i in range(n):
        for top in range(0, height, rows):
            yield logits[i:i + 1, :, top:top + rows], target[i:i + 1, ..., top:top + rows, :]


def bin_index(confidence: Tensor, n_bins: int) -> Tensor:
    """Equal-width bin of each confidence in [0, 1]: floor(c * B), 1.0 into the last bin."""
    return (confidence * n_bins).long().clamp_(0, n_bins - 1)


def calibration_errors(count: Tensor, confidence_sum: Tensor, hit_sum: Tensor) -> tuple[float, float]:
    """(ECE, MCE) from per-bin counts, sums of confidences and sums of outcomes (1-D, float).

    NaN for both when no pixel was counted.
    """
    count, confidence_sum, hit_sum = (t.double().cpu() for t in (count, confidence_sum, hit_sum))
    total = count.sum()
    if total <= 0:
        return math.nan, math.nan
    filled = count > 0
    gap = (hit_sum[filled] - confidence_sum[filled]).abs() / count[filled]  # |acc_b - conf_b|
    ece = float((count[filled] / total * gap).sum())
    return ece, float(gap.max())


class CalibrationAccumulator:
    """Streams logits and targets of one task into reliability-diagram bins.

    update(logits (N, K, H, W), target) per batch, then all_reduce() under torch.distributed,
    then summary(). Targets as in pixelwise.tasks: (N, H, W) ids, or (N, C, H, W) multilabel.
    """

    def __init__(self, task: Task, n_bins: int = DEFAULT_BINS):
        if n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        self.task = task
        self.n_bins = n_bins
        k = task.num_classes
        self.count = torch.zeros(n_bins, dtype=torch.float64)           # top label: pixels per bin
        self.confidence = torch.zeros(n_bins, dtype=torch.float64)      # sum of top-label confidences
        self.correct = torch.zeros(n_bins, dtype=torch.float64)         # sum of correct top labels
        self.class_count = torch.zeros(k, n_bins, dtype=torch.float64)  # classwise: p_k binned
        self.class_confidence = torch.zeros(k, n_bins, dtype=torch.float64)
        self.class_positive = torch.zeros(k, n_bins, dtype=torch.float64)

    def reset(self) -> None:
        for t in (self.count, self.confidence, self.correct, self.class_count, self.class_confidence,
                  self.class_positive):
            t.zero_()

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add one batch: logits (N, K, H, W) of this task, target as the task defines it."""
        for part, labels in pixel_slabs(logits, target, SLAB_PIXELS):
            probs = self.task.probabilities(part.float())  # (1, K, h, W)
            if self.task.kind == "multilabel":
                self._update_multilabel(probs, labels)
            else:
                self._update_single_label(probs, labels)

    def _update_single_label(self, probs: Tensor, target: Tensor) -> None:
        k = self.task.num_classes
        if self.task.kind == "binary":
            probs = torch.cat([1 - probs, probs], dim=1)  # (N, 2, H, W): background, foreground
        flat = probs.permute(0, 2, 3, 1).reshape(-1, k)  # (P, K)
        labels = target.reshape(-1).to(flat.device).long()
        keep = labels != self.task.ignore_index
        flat, labels = flat[keep], labels[keep]
        confidence, predicted = flat.max(dim=1)  # ties go to the lower class id, as argmax does
        self._add_top(confidence, predicted == labels)
        # Classwise: row i, class c -> one entry of the (K, B) table.
        positive = labels[:, None] == torch.arange(k, device=flat.device)[None, :]  # (P, K)
        self._add_classwise(flat, positive, torch.ones_like(positive))

    def _update_multilabel(self, probs: Tensor, target: Tensor) -> None:
        k = self.task.num_classes
        flat = probs.permute(0, 2, 3, 1).reshape(-1, k)  # (P, K)
        labels = target.to(flat.device).permute(0, 2, 3, 1).reshape(-1, k)
        keep = labels != self.task.ignore_index  # per element
        positive = labels == 1
        p = flat[keep]
        self._add_top(torch.maximum(p, 1 - p), (p > 0.5) == positive[keep])
        self._add_classwise(flat, positive, keep)

    def _add_top(self, confidence: Tensor, correct: Tensor) -> None:
        index = bin_index(confidence, self.n_bins)
        b = self.n_bins
        self.count += torch.bincount(index, minlength=b).double().cpu()
        self.confidence += torch.bincount(index, weights=confidence.double(), minlength=b).cpu()
        self.correct += torch.bincount(index, weights=correct.double(), minlength=b).cpu()

    def _add_classwise(self, probs: Tensor, positive: Tensor, keep: Tensor) -> None:
        k, b = self.task.num_classes, self.n_bins
        index = bin_index(probs, b) + torch.arange(k, device=probs.device)[None, :] * b  # (P, K)
        index, p, pos = index[keep], probs[keep].double(), positive[keep].double()
        self.class_count += torch.bincount(index, minlength=k * b).double().cpu().view(k, b)
        self.class_confidence += torch.bincount(index, weights=p, minlength=k * b).cpu().view(k, b)
        self.class_positive += torch.bincount(index, weights=pos, minlength=k * b).cpu().view(k, b)

    def all_reduce(self) -> None:
        """Sum the bins of all torch.distributed processes (no-op when not distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        for t in (self.count, self.confidence, self.correct, self.class_count, self.class_confidence,
                  self.class_positive):
            moved = t.to(device)
            dist.all_reduce(moved)
            t.copy_(moved.cpu())

    # ------------------------------------------------------------ scores
    @property
    def pixels(self) -> int:
        """Predictions counted (pixels; multilabel: pixel-class elements)."""
        return int(self.count.sum())

    def ece(self) -> float:
        return calibration_errors(self.count, self.confidence, self.correct)[0]

    def mce(self) -> float:
        return calibration_errors(self.count, self.confidence, self.correct)[1]

    def classwise(self) -> list[float]:
        """ECE of each class's own probability (NaN for a class without counted pixels)."""
        return [calibration_errors(self.class_count[c], self.class_confidence[c], self.class_positive[c])[0]
                for c in range(self.task.num_classes)]

    def classwise_ece(self) -> float:
        values = [v for v in self.classwise() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready: ece, mce, classwise_ece, per_class_ece, pixels and the reliability bins."""
        names = list(class_names) if class_names else [str(i) for i in range(self.task.num_classes)]
        ece, mce = calibration_errors(self.count, self.confidence, self.correct)
        count = self.count.tolist()
        return {
            "ece": ece,
            "mce": mce,
            "classwise_ece": self.classwise_ece(),
            "per_class_ece": dict(zip(names, self.classwise())),
            "n_bins": self.n_bins,
            "pixels": self.pixels,
            "bins": {
                "lower": [i / self.n_bins for i in range(self.n_bins)],
                "count": [int(c) for c in count],
                "confidence": [s / c if c else math.nan for s, c in zip(self.confidence.tolist(), count)],
                "accuracy": [s / c if c else math.nan for s, c in zip(self.correct.tolist(), count)],
            },
        }


class ErrorByUncertainty:
    """Pixels and errors per uncertainty bin (uncertainty in [0, 1]), for the
    error-versus-uncertainty curve: are the wrong pixels the uncertain ones?

    update(uncertainty, error) takes the counted pixels only (ignored pixels already left out);
    for multilabel each pixel-class element is one entry.
    """

    def __init__(self, n_bins: int = 100):
        self.n_bins = n_bins
        self.count = torch.zeros(n_bins, dtype=torch.float64)
        self.errors = torch.zeros(n_bins, dtype=torch.float64)

    @torch.no_grad()
    def update(self, uncertainty: Tensor, error: Tensor) -> None:
        index = bin_index(uncertainty.reshape(-1).float(), self.n_bins)
        self.count += torch.bincount(index, minlength=self.n_bins).double().cpu()
        self.errors += torch.bincount(index, weights=error.reshape(-1).double(), minlength=self.n_bins).cpu()

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        for t in (self.count, self.errors):
            moved = t.to(device)
            dist.all_reduce(moved)
            t.copy_(moved.cpu())

    def curve(self) -> tuple[list[float], list[float]]:
        """Most uncertain first: (share of pixels flagged, share of all errors among them), from (0, 0)."""
        count, errors = self.count.flip(0), self.errors.flip(0)
        total, wrong = float(count.sum()), float(errors.sum())
        flagged = [0.0] + (count.cumsum(0) / max(total, 1.0)).tolist()
        caught = [0.0] + (errors.cumsum(0) / wrong).tolist() if wrong > 0 else [0.0] * (self.n_bins + 1)
        return flagged, caught

    def auroc(self) -> float:
        """Area under the ROC of "uncertainty detects an error" (ties within a bin count half);
        0.5 = no better than chance, NaN when there are no errors or no correct pixels."""
        right = self.count - self.errors
        n_err, n_right = float(self.errors.sum()), float(right.sum())
        if n_err <= 0 or n_right <= 0:
            return math.nan
        # P(u_error > u_right) + 0.5 P(same bin), bins ascending in uncertainty.
        right_below = torch.cumsum(right, 0) - right
        return float(((self.errors * (right_below + 0.5 * right)).sum()) / (n_err * n_right))

    def summary(self) -> dict[str, Any]:
        flagged, caught = self.curve()
        total = float(self.count.sum())
        return {
            "n_bins": self.n_bins,
            "pixels": int(total),
            "error_rate": float(self.errors.sum()) / total if total else math.nan,
            "auroc": self.auroc(),
            "count": [int(c) for c in self.count.tolist()],
            "errors": [int(e) for e in self.errors.tolist()],
            "flagged_share": flagged,
            "error_share": caught,
        }
