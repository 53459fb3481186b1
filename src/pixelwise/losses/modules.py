"""Thin nn.Module wrappers over the loss functions, and their weighted sum.

A module holds only configuration (the task, options, class weights as a buffer so `.to()`
moves them); forward is a pure call of the function and changes no state.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from pixelwise.losses import functional as Fn
from pixelwise.tasks import Task

# name -> function; the spec strings of build_loss use these names.
LOSS_FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    "ce": Fn.cross_entropy,
    "bce": Fn.binary_cross_entropy,
    "dice": Fn.dice_loss,
    "jaccard": Fn.jaccard_loss,
    "focal": Fn.focal_loss,
    "tversky": Fn.tversky_loss,
}
ALIASES = {"cross_entropy": "ce", "iou": "jaccard", "soft_iou": "jaccard", "bce_with_logits": "bce"}


class SegmentationLoss(nn.Module):
    """One loss: `loss(logits, target) -> scalar`, calling LOSS_FUNCTIONS[name] with the task."""

    def __init__(self, name: str, task: Task, class_weights: Tensor | None = None, **options: Any):
        super().__init__()
        self.name = name
        self.task = task
        self.options = options
        self.fn = LOSS_FUNCTIONS[name]
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float().clone())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        extra = {"class_weights": self.class_weights} if self.class_weights is not None else {}
        return self.fn(logits, target, self.task, **extra, **self.options)

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}, task={self.task.kind}" + (f", {opts}" if opts else "")


class WeightedSum(nn.Module):
    """sum_i weight_i * loss_i(logits, target), e.g. 0.5 * ce + 1.0 * dice."""

    def __init__(self, terms: list[SegmentationLoss], weights: list[float]):
        super().__init__()
        if len(terms) != len(weights) or not terms:
            raise ValueError("a weighted sum needs one weight per term and at least one term")
        self.terms = nn.ModuleList(terms)
        self.weights = [float(w) for w in weights]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total = None
        for w, term in zip(self.weights, self.terms):
            value = w * term(logits, target)
            total = value if total is None else total + value
        return total

    def parts(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each term's unweighted value, for logging."""
        return {term.name: term(logits, target) for term in self.terms}

    @property
    def spec(self) -> str:
        return "+".join(f"{w:g}*{t.name}" for w, t in zip(self.weights, self.terms))

    def extra_repr(self) -> str:
        return self.spec
