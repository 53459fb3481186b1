"""Binary, multiclass and multilabel segmentation: activation, decoding and checks, in one place.

A model always returns raw logits `(N, C, H, W)`. What they mean depends on the task:

- binary: 1 channel, sigmoid, a threshold (default 0.5); target `(N, H, W)` in {0, 1}.
  A 2-channel softmax head (the U-Net paper's form) converts exactly to the 1-channel form
  with `two_channel_to_binary_logits`, because softmax([a, b])[1] == sigmoid(b - a).
- multiclass: C channels, softmax over the channel axis (dim 1), argmax; target `(N, H, W)`
  integer class ids, pixels equal to `ignore_index` are ignored.
- multilabel: C channels, one independent sigmoid each, per-class thresholds; target
  `(N, C, H, W)` in {0, 1} (`ignore_index` allowed per element).

The checks raise `TaskError` with a message that names the usual mistake (a softmax applied
before the loss, a softmax over height or width, one-hot targets, resized masks...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from pixelwise.errors import TaskError

TaskKind = Literal["binary", "multiclass", "multilabel"]
KINDS: tuple[str, ...] = ("binary", "multiclass", "multilabel")


@dataclass(frozen=True)
class Task:
    """What the logits mean. `num_classes` is the label space (binary -> 2: background, foreground)."""

    kind: TaskKind
    num_classes: int = 2
    ignore_index: int = 255
    threshold: float | tuple[float, ...] = 0.5

    def __post_init__(self) -> None:
        num_classes, threshold = check_task_fields(self.kind, self.num_classes, self.ignore_index, self.threshold)
        object.__setattr__(self, "num_classes", num_classes)
        object.__setattr__(self, "threshold", threshold)

    # ----------------------------------------------------------------- shapes
    @property
    def out_channels(self) -> int:
        """Number of logit channels a model must output for this task."""
        return 1 if self.kind == "binary" else self.num_classes

    def thresholds(self, device: torch.device | str | None = None) -> Tensor:
        """Thresholds as a float32 tensor of shape (out_channels,)."""
        t = self.threshold if isinstance(self.threshold, tuple) else (self.threshold,) * self.out_channels
        return torch.tensor(t, dtype=torch.float32, device=device)

    # ---------------------------------------------------- activation, decoding
    def probabilities(self, logits: Tensor) -> Tensor:
        """(N, C, *spatial) logits -> probabilities of the same shape, float32.

        sigmoid for binary and multilabel, softmax over the channel axis for multiclass.
        """
        x = logits.float()  # bf16/fp16 softmax loses the small probabilities
        if self.kind == "multiclass":
            return torch.softmax(x, dim=1)
        return torch.sigmoid(x)

    def decode(self, logits: Tensor) -> Tensor:
        """Logits -> labels: binary/multiclass (N, *spatial) int64; multilabel (N, C, *spatial) uint8."""
        if self.kind == "multiclass":
            return logits.argmax(dim=1)  # softmax is monotonic: no need to compute it
        return self.decode_probabilities(torch.sigmoid(logits.float()))

    def decode_probabilities(self, probs: Tensor) -> Tensor:
        """Probabilities (N, C, *spatial) -> labels, the same as `decode` on the logits."""
        if self.kind == "multiclass":
            return probs.argmax(dim=1)
        thr = self.thresholds(probs.device).view(1, -1, *([1] * (probs.ndim - 2)))
        above = probs.float() > thr
        if self.kind == "binary":
            return above[:, 0].long()
        return above.to(torch.uint8)

    # ----------------------------------------------------------------- checks
    def check_logits(self, logits: Tensor) -> None:
        """Raise TaskError if `logits` cannot be this task's raw model output (see `check_logits`)."""
        check_logits(self, logits)

    def check_target(self, target: Tensor) -> None:
        """Raise TaskError if `target` is not this task's target form (see `check_target`)."""
        check_target(self, target)

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON / weights_only safe) that `from_dict` turns back into this task."""
        thr = list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold
        return {"kind": self.kind, "num_classes": self.num_classes, "ignore_index": self.ignore_index, "threshold": thr}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        """Inverse of `to_dict`; unknown keys are an error."""
        known = {"kind", "num_classes", "ignore_index", "threshold"}
        unknown = set(d) - known
        if unknown:
            raise TaskError(f"unknown task keys {sorted(unknown)}; accepted: {sorted(known)}")
        if "kind" not in d:
            raise TaskError("a task dict needs 'kind' (binary, multiclass or multilabel)")
        d = dict(d)
        if isinstance(d.get("threshold"), list):
            d["threshold"] = tuple(d["threshold"])
        return cls(**d)


# ------------------------------------------------------ the user-mistake checks
# Plain functions, so data checks and losses can call them without a Task method each;
# Task.check_logits / Task.check_target are thin wrappers.
def check_task_fields(kind: str, num_classes: Any, ignore_index: int,
                      threshold: float | Sequence[float]) -> tuple[int, float | tuple[float, ...]]:
    """Validate a task's fields; returns (num_classes as int, threshold as float or tuple).

    Raises TaskError naming the mistake (unknown kind, a binary task with C != 2, an ignore
    value that is a class id, thresholds that are not probabilities...)."""
    if kind not in KINDS:
        raise TaskError(f"unknown task kind {kind!r}; accepted: {', '.join(KINDS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TaskError(f"num_classes must be an integer, got {num_classes!r}")
    num_classes = int(num_classes)
    if kind == "binary" and num_classes != 2:
        raise TaskError(
            f"a binary task has num_classes=2 (background, foreground) and 1 output channel; "
            f"got num_classes={num_classes}"
        )
    if num_classes < (1 if kind == "multilabel" else 2):
        raise TaskError(f"{kind} task needs more classes, got num_classes={num_classes}")
    reserved = (0, 1) if kind == "multilabel" else range(num_classes)
    if ignore_index in reserved:
        raise TaskError(
            f"ignore_index={ignore_index} collides with a class id (num_classes={num_classes})"
        )
    if isinstance(threshold, (list, tuple)):
        value = tuple(float(t) for t in threshold)
        if kind != "multilabel":
            raise TaskError("per-class thresholds are only meaningful for a multilabel task")
        if len(value) != num_classes:
            raise TaskError(
                f"threshold has {len(value)} values but the task has {num_classes} classes"
            )
        values = value
    else:
        value = float(threshold)
        values = (value,)
    if not all(0.0 < t < 1.0 for t in values):
        raise TaskError(f"thresholds are probabilities strictly between 0 and 1, got {threshold!r}")
    return num_classes, value


def check_logits(task: Task, logits: Tensor) -> None:
    """Raise TaskError if `logits` cannot be `task`'s raw model output.

    Catches: wrong rank or channel count, integer tensors, NaN/inf, probabilities passed
    instead of logits (a softmax before the loss), and a softmax over height or width.
    """
    if not isinstance(logits, Tensor):
        raise TaskError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim < 3:
        raise TaskError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TaskError(f"logits must be floating point, got {logits.dtype}: pass the model output, not labels")
    channels = logits.shape[1]
    if channels != task.out_channels:
        hint = ""
        if task.kind == "binary" and channels == 2:
            hint = (" A 2-channel softmax head: convert with two_channel_to_binary_logits(logits),"
                    " or use Task('multiclass', num_classes=2).")
        elif task.kind != "binary" and channels == 1:
            hint = " A 1-channel output is a binary task."
        raise TaskError(
            f"{task.kind} task with {task.num_classes} classes expects {task.out_channels} logit "
            f"channel(s) on dim 1, got shape {tuple(logits.shape)}.{hint}"
        )
    if logits.numel() == 0:
        return
    x = logits.detach().float()
    if not torch.isfinite(x).all():
        raise TaskError("logits contain NaN or inf: the model diverged or the input holds NaN")
    lo, hi = torch.aminmax(x)
    if lo < 0 or hi > 1:
        return  # raw logits: some value outside [0, 1]
    tol = 1e-3 if logits.dtype in (torch.float32, torch.float64) else 2e-2
    if channels > 1 and _sums_to_one(x, 1, tol):
        raise TaskError(
            "logits look like probabilities (all values in [0, 1], summing to 1 over channels): "
            "a softmax was applied before the loss or the metric. Pass raw logits; the loss and "
            "Task.probabilities apply the activation themselves."
        )
    for dim, name in ((-2, "height"), (-1, "width")):
        if x.ndim >= 4 and x.shape[dim] > 1 and _sums_to_one(x, dim, tol):
            raise TaskError(
                f"logits look like a softmax taken over {name} (values in [0, 1] summing to 1 "
                f"over dim {x.ndim + dim}, not over the channels): softmax belongs on dim=1, "
                f"and only after the loss (pass raw logits)."
            )


def check_target(task: Task, target: Tensor) -> None:
    """Raise TaskError if `target` is not `task`'s target form (see module docstring)."""
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target)
    if not isinstance(target, Tensor):
        raise TaskError(f"target must be a torch.Tensor, got {type(target).__name__}")
    shape = tuple(target.shape)
    if task.kind == "multilabel":
        _check_multilabel_target(task, target, shape)
    else:
        _check_index_target(task, target, shape)


def _check_index_target(task: Task, target: Tensor, shape: tuple[int, ...]) -> None:
    if target.ndim == 4 and shape[1] == 1:
        raise TaskError(f"target has a channel axis of size 1, shape {shape}: use target[:, 0] -> (N, H, W)")
    if target.ndim == 4 and shape[1] in (task.num_classes, task.out_channels) and _is_zero_one(target):
        raise TaskError(
            f"target looks one-hot, shape {shape}; a {task.kind} task expects class indices "
            f"(N, H, W): convert with target.argmax(dim=1)"
        )
    if target.ndim < 2:
        raise TaskError(f"target must be (N, H, W) class indices, got shape {shape}")
    if target.numel() == 0:
        return
    if target.is_floating_point():
        values = target[target != task.ignore_index]
        if values.numel() and not torch.equal(values, values.round()):
            raise TaskError(
                "target holds non-integer values: a mask scaled to [0, 1] (ToTensor on a mask) "
                "or resized with bilinear interpolation; resize masks with nearest neighbour"
            )
        raise TaskError(f"target must be an integer tensor of class ids (N, H, W), got {target.dtype}: use .long()")
    if target.dtype == torch.bool:
        raise TaskError("target is boolean: convert with .long() (0 = background, 1 = foreground)")
    valid = (target >= 0) & (target < task.num_classes) | (target == task.ignore_index)
    if bool(valid.all()):
        return
    bad = torch.unique(target[~valid])
    shown = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if bad.numel() > 8 else "")
    hint = ""
    if task.kind == "binary" and int(target.max()) == 255 and task.ignore_index != 255:
        hint = " A 0/255 mask: divide by 255 to get 0/1."
    elif looks_interpolated(target, list(range(task.num_classes)) + [task.ignore_index]):
        hint = " The extra values sit on edges: the mask was likely resized with bilinear interpolation."
    raise TaskError(
        f"target has values outside 0..{task.num_classes - 1} (ignore_index={task.ignore_index}): "
        f"{shown}.{hint}"
    )


def _check_multilabel_target(task: Task, target: Tensor, shape: tuple[int, ...]) -> None:
    if target.ndim == 3 or (target.ndim == 4 and shape[1] != task.num_classes):
        raise TaskError(
            f"multilabel target must be (N, {task.num_classes}, H, W) with 0/1 per class, got "
            f"shape {shape}; class indices (N, H, W) belong to a multiclass task "
            f"(or convert with one_hot(target, num_classes))"
        )
    if target.ndim != 4:
        raise TaskError(f"multilabel target must be (N, C, H, W), got shape {shape}")
    valid = (target == 0) | (target == 1) | (target == task.ignore_index)
    if not bool(valid.all()):
        bad = torch.unique(target[~valid])[:8].tolist()
        raise TaskError(f"multilabel target must hold 0 or 1 (or ignore_index={task.ignore_index}), found {bad}")


# --------------------------------------------------------------------- helpers
def _sums_to_one(x: Tensor, dim: int, tol: float) -> bool:
    return bool(((x.sum(dim=dim) - 1.0).abs() <= tol).all())


def _is_zero_one(t: Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


def two_channel_to_binary_logits(logits: Tensor) -> Tensor:
    """(N, 2, *spatial) softmax logits -> (N, 1, *spatial) binary logits b - a.

    Exact: softmax([a, b])[1] = 1 / (1 + exp(a - b)) = sigmoid(b - a).
    """
    if logits.ndim < 2 or logits.shape[1] != 2:
        raise TaskError(f"expected 2-channel logits (N, 2, H, W), got shape {tuple(logits.shape)}")
    return logits[:, 1:2] - logits[:, 0:1]


def one_hot(labels: Tensor, num_classes: int, ignore_index: int | None = None,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """(N, *spatial) class ids -> (N, C, *spatial) one-hot; ignored pixels are all zeros."""
    labels = torch.as_tensor(labels).long()
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore_index is None else labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    if bool(((safe < 0) | (safe >= num_classes)).any()):
        bad = torch.unique(safe[(safe < 0) | (safe >= num_classes)])[:8].tolist()
        raise TaskError(f"labels outside 0..{num_classes - 1}: {bad}")
    out = torch.nn.functional.one_hot(safe, num_classes)  # (N, *spatial, C)
    out = out * valid.unsqueeze(-1)
    return out.movedim(-1, 1).to(dtype)


def one_hot_to_labels(onehot: Tensor, ignore_index: int = 255) -> Tensor:
    """(N, C, *spatial) one-hot -> (N, *spatial) int64 ids; all-zero pixels -> ignore_index."""
    labels = onehot.argmax(dim=1)
    empty = ~(onehot != 0).any(dim=1)
    return torch.where(empty, torch.full_like(labels, ignore_index), labels)


def labels_to_color(labels: Tensor | np.ndarray, colors: Sequence[Sequence[int]],
                    ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Label map (*shape) -> uint8 colour image (*shape, 3); ids without a colour get `ignore_color`.

    The one colouriser lives in `pixelwise.data.masks.colorize`; this name stays for callers."""
    from pixelwise.data.masks import colorize  # imported here: pixelwise.data imports this module

    try:
        return colorize(labels, colors, ignore_color)
    except ValueError as exc:
        raise TaskError(str(exc)) from None


def looks_interpolated(mask: Tensor | np.ndarray, valid_values: Iterable[int]) -> bool:
    """True if `mask` carries what bilinear resizing leaves at class edges: the one rule,
    `pixelwise.data.masks.looks_resized`, under the name this module has always exported."""
    from pixelwise.data.masks import looks_resized

    return looks_resized(mask, valid_values)
