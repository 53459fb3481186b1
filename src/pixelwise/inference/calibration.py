"""Temperature scaling: fit T on held-out pixels by NLL, and apply logits / T at inference.

Dividing logits by one positive temperature never changes an argmax, so multiclass labels
stay exactly as they were; only the probabilities soften (T > 1) or sharpen (T < 1). For
binary and multilabel a temperature per output channel is allowed (each channel is its own
sigmoid). With the default threshold 0.5 (logit 0) sigmoid labels do not change either; a
task threshold other than 0.5 applies to the calibrated probability, which is what a
threshold on a probability should mean.

A checkpoint stores the fit under the optional key

    calibration: {temperature: [T] or [T_1..T_K], per_label: bool, nll_before, nll_after,
                  ece_before, ece_after, pixels, data, split}

Older checkpoints without the key load and predict exactly as before.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pixelwise.errors import ConfigError
from pixelwise.tasks import Task

DEFAULT_MAX_PIXELS = 2_000_000
# The search interval for T. Beyond it a model is either broken or the data holds no signal.
T_MIN, T_MAX = 0.02, 50.0


class TemperatureScaled(nn.Module):
    """model(x) / T, with T a scalar or one value per output channel. Returns logits (N, K, H, W)."""

    def __init__(self, model: nn.Module, temperature: Sequence[float]):
        super().__init__()
        self.model = model
        t = torch.tensor([float(v) for v in temperature], dtype=torch.float32)
        self.register_buffer("inv_temperature", (1.0 / t).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.inv_temperature


def with_calibration(model: nn.Module, temperature: Sequence[float] | None) -> nn.Module:
    """`model` dividing its logits by `temperature` (CheckpointMeta.temperature), or `model`
    itself when there is none (a checkpoint never calibrated)."""
    if temperature is None:
        return model
    return TemperatureScaled(model, temperature).eval()


# ---------------------------------------------------------------- fitting
class PixelSample:
    """A uniform random sample without replacement of at most `max_pixels` counted pixels,
    streamed batch by batch (every pixel gets a random key; the smallest keys are kept).

    Rows: logits (M, K) float32, targets (M,) int64 (single-label) or (M, K) (multilabel,
    ignore_index allowed per element). Ignored pixels never enter the sample.
    """

    def __init__(self, task: Task, max_pixels: int = DEFAULT_MAX_PIXELS, seed: int = 0):
        if max_pixels < 1:
            raise ConfigError(f"max_pixels must be positive, got {max_pixels}")
        self.task, self.max_pixels = task, max_pixels
        self.generator = torch.Generator().manual_seed(seed)
        self.keys = torch.zeros(0)
        self.logits = torch.zeros(0, task.out_channels)
        self.targets = torch.zeros((0, task.num_classes) if task.kind == "multilabel" else (0,), dtype=torch.long)
        self.seen = 0  # counted pixels offered so far

    def add(self, logits: Tensor, target: Tensor) -> None:
        k = logits.shape[1]
        rows = logits.detach().float().permute(0, 2, 3, 1).reshape(-1, k).cpu()
        if self.task.kind == "multilabel":
            labels = target.detach().cpu().permute(0, 2, 3, 1).reshape(-1, k).long()
            keep = (labels != self.task.ignore_index).any(dim=1)
        else:
            labels = target.detach().cpu().reshape(-1).long()
            keep = labels != self.task.ignore_index
        rows, labels = rows[keep], labels[keep]
        self.seen += len(rows)
        keys = torch.rand(len(rows), generator=self.generator)
        self.keys = torch.cat([self.keys, keys])
        self.logits = torch.cat([self.logits, rows])
        self.targets = torch.cat([self.targets, labels])
        if len(self.keys) > self.max_pixels:
            chosen = torch.topk(self.keys, self.max_pixels, largest=False).indices
            self.keys, self.logits, self.targets = self.keys[chosen], self.logits[chosen], self.targets[chosen]

    def __len__(self) -> int:
        return len(self.keys)


def nll_terms(logits: Tensor, targets: Tensor, task: Task, temperature: Tensor) -> Tensor:
    """Summed negative log-likelihood per output channel group at `temperature` (float64).

    temperature: (G,) with G = 1 (one T) or G = K (one per channel; binary/multilabel only).
    Returns (G,) sums: multiclass cross-entropy, or Bernoulli NLL summed over counted elements.
    """
    temperature = temperature.to(torch.float64)
    z = logits.to(torch.float64)
    if task.kind == "multiclass":
        return F.cross_entropy(z / temperature.view(1, -1), targets, reduction="sum").view(1)
    if task.kind == "binary":
        y = targets.to(torch.float64).view(-1, 1)
        losses = F.binary_cross_entropy_with_logits(z / temperature.view(1, -1), y, reduction="none")
        return losses.sum(dim=0).sum().view(1) if len(temperature) == 1 else losses.sum(dim=0)
    mask = targets != task.ignore_index
    y = torch.where(mask, targets, torch.zeros_like(targets)).to(torch.float64)
    losses = F.binary_cross_entropy_with_logits(z / temperature.view(1, -1), y, reduction="none") * mask
    per_channel = losses.sum(dim=0)  # (K,)
    return per_channel.sum().view(1) if len(temperature) == 1 else per_channel


def fit_temperature(logits: Tensor, targets: Tensor, task: Task, per_label: bool = False,
                    iterations: int = 45) -> list[float]:
    """Temperature(s) minimising the NLL of `logits` (M, K) against `targets`.

    NLL(z / T) is convex in 1/T (a log-sum-exp of a linear function minus a linear one), so it
    has one minimum along log T and a golden-section search on log T over [T_MIN, T_MAX] finds
    it to ~1e-8 in log T after 45 steps, with no learning rate or line search to tune. Per-label
    temperatures (binary, multilabel) are independent 1-D problems searched side by side.
    """
    if per_label and task.kind == "multiclass":
        raise ConfigError("per-label temperatures are only offered for binary and multilabel tasks: one "
                          "temperature per class would change multiclass argmax labels")
    if len(logits) == 0:
        raise ConfigError("no counted pixels to fit a temperature on (every pixel is ignore_index?)")
    groups = task.out_channels if per_label else 1
    ratio = (math.sqrt(5) - 1) / 2
    low = torch.full((groups,), math.log(T_MIN), dtype=torch.float64)
    high = torch.full((groups,), math.log(T_MAX), dtype=torch.float64)

    def loss(u: Tensor) -> Tensor:
        return nll_terms(logits, targets, task, torch.exp(u))

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        # The minimum lies in [low, b] where f(a) <= f(b), else in [a, high]; the surviving
        # inner probe is reused, so each step costs one new evaluation per group.
        left = fa <= fb
        high = torch.where(left, b, high)
        low = torch.where(left, low, a)
        probe = torch.where(left, high - ratio * (high - low), low + ratio * (high - low))
        value = loss(probe)
        a, b, fa, fb = (torch.where(left, probe, b), torch.where(left, a, probe),
                        torch.where(left, value, fb), torch.where(left, fa, value))
    return [float(v) for v in torch.exp((low + high) / 2)]
