"""The one confusion-matrix core every metric comes from.

`confusion_matrix(pred, target, C)` counts pixel pairs with one histogram of
`target * C + pred`: rows are the target class, columns the predicted class. Why it is fast
(8x512x1024 uint8 labels, 19 classes: ~25-45 ms on 2 busy cores, against ~1.5 s for
torchmetrics' MulticlassJaccardIndex.update; `pixelwise bench --only confusion`):
- the index is built in the smallest integer type that holds it (int16 for uint8 labels),
  never in int64 over the whole batch;
- ignored pixels are not removed by boolean indexing (a copy of the batch): they fall into
  their own row of the histogram, which is dropped;
- on the CPU the passes run in numpy, chunk by chunk in cache, instead of torch's
  OpenMP-split kernels, whose thread hand-offs dominate on a loaded machine.

`ConfusionMatrix` streams it batch by batch and sums across processes with all_reduce.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pixelwise.errors import TaskError

ArrayLike = Tensor | np.ndarray


def _as_tensor(x: ArrayLike, what: str) -> Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "u" and x.dtype.itemsize > 1:
            # torch has few kernels for uint16/32/64 (16-bit PNGs); widen to a signed type.
            x = x.astype(np.int32 if x.dtype.itemsize == 2 else np.int64)
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise TaskError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex():
        raise TaskError(f"{what} must hold integer class ids, got {x.dtype}: decode logits first (Task.decode)")
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    elif x.dtype in (torch.uint16, torch.uint32, torch.uint64):
        x = x.to(torch.int32 if x.dtype == torch.uint16 else torch.int64)
    return x.detach()


def _index_dtype(max_index: int) -> torch.dtype:
    if max_index < 2**15:
        return torch.int16
    if max_index < 2**31:
        return torch.int32
    return torch.int64


def _min_max(x: Tensor | np.ndarray) -> tuple[int, int]:
    if isinstance(x, np.ndarray):
        return int(x.min()), int(x.max())
    lo, hi = torch.aminmax(x)
    return int(lo), int(hi)


def _where_equal(x: Tensor | np.ndarray, value: int, replacement: int) -> Tensor | np.ndarray:
    if isinstance(x, np.ndarray):
        return np.where(x == value, replacement, x)
    return torch.where(x == value, torch.full_like(x, replacement), x)


_CHUNK = 1 << 18  # pixels per numpy pass: the index and bincount's int64 copy stay in cache


def _pair_counts(t: Tensor | np.ndarray, p: Tensor | np.ndarray, rows: int, cols: int) -> Tensor:
    """Histogram of `t * cols + p` over rows * cols cells, as int64 (rows, cols).

    The index is built in the smallest integer type that holds it (int16 for uint8 labels).
    CPU: numpy, chunk by chunk, so no multi-MB temporary is ever written. GPU: torch.
    """
    dtype = _index_dtype(rows * cols)
    if isinstance(t, np.ndarray):
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        t, p = t.reshape(-1), p.reshape(-1)
        counts = np.zeros(rows * cols, dtype=np.int64)
        for start in range(0, t.size, _CHUNK):
            index = t[start:start + _CHUNK].astype(np_dtype)
            index *= cols
            np.add(index, p[start:start + _CHUNK], out=index, casting="unsafe")  # p < cols: checked
            counts += np.bincount(index, minlength=rows * cols)
        return torch.from_numpy(counts).reshape(rows, cols)
    index = t.to(dtype, copy=True)
    index.mul_(cols).add_(p if torch.can_cast(p.dtype, dtype) else p.to(dtype))
    return torch.bincount(index.reshape(-1), minlength=rows * cols).reshape(rows, cols)


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int,
                     ignore_index: int | None = 255) -> Tensor:
    """Count (target, pred) pairs: int64 (C, C), rows = target class, columns = predicted class.

    `pred` and `target` are label maps of the same shape (any shape), torch or numpy. Pixels
    whose target is `ignore_index` are skipped. Any other target outside 0..C-1, and any
    prediction outside 0..C-1 at a scored pixel, raise TaskError (a silent skip would hide a
    wrong num_classes).
    """
    pred = _as_tensor(pred, "pred")
    target = _as_tensor(target, "target")
    if pred.shape != target.shape:
        raise TaskError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    C = int(num_classes)
    if pred.device != target.device:
        pred = pred.to(target.device)
    if target.numel() == 0:
        return torch.zeros(C, C, dtype=torch.int64, device=target.device)
    # CPU: the work runs in numpy on zero-copy views. torch splits each memory-bound pass
    # over its OpenMP threads, and on a busy machine every hand-off costs 15-25 ms, far more
    # than the work itself (8x512x1024 uint8, 19 classes, 2 busy cores: ~200 ms -> ~25 ms).
    p, t = (pred.numpy(), target.numpy()) if target.device.type == "cpu" else (pred, target)
    pmin, pmax = _min_max(p)
    if pmin < 0:
        raise TaskError(f"predictions hold negative values ({pmin}): expected class ids 0..{C - 1}")
    tmin, tmax = _min_max(t)
    if tmin < 0:
        # Negative ids (e.g. ignore_index=-1): move ignored pixels to a spare row first.
        if ignore_index is not None and ignore_index < 0:
            t = _where_equal(t, ignore_index, C)
            ignore_index = C
            tmin, tmax = _min_max(t)
        if tmin < 0:
            raise TaskError(f"target has negative values ({tmin}) that are not ignore_index={ignore_index}")
    # One histogram over (rows x cols) cells; cells outside the C x C block are checked below,
    # so an out-of-range id is an error only where it is counted (not under an ignored pixel).
    rows, cols = max(tmax + 1, C), max(pmax + 1, C)
    counts = _pair_counts(t, p, rows, cols)
    if rows > C or cols > C:
        counted = counts.clone()
        if ignore_index is not None and C <= ignore_index < rows:
            counted[ignore_index] = 0
        if bool(counted[C:].any()):
            bad = [int(v) + C for v in counted[C:].sum(dim=1).nonzero().flatten()]
            raise TaskError(f"target values outside 0..{C - 1} that are not ignore_index={ignore_index}: {bad[:8]}")
        if bool(counted[:, C:].any()):
            bad = [int(v) + C for v in counted[:, C:].sum(dim=0).nonzero().flatten()]
            raise TaskError(f"predictions outside 0..{C - 1} at scored pixels: {bad[:8]} (wrong num_classes?)")
    return counts[:C, :C].to(torch.int64)


def _all_reduce_sum(t: Tensor) -> Tensor:
    """In place: `t` becomes its sum over processes."""
    from pixelwise.collective import all_reduce_sum

    return t.copy_(all_reduce_sum(t))


class _StreamingCounts:
    """Shared behaviour of the streaming accumulators: an int64 count tensor that sums across
    batches and across processes, and scores computed from it."""

    matrix: Tensor

    def all_reduce(self) -> None:
        """Sum the matrices of all torch.distributed processes (no-op when not distributed)."""
        _all_reduce_sum(self.matrix)

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self, class_names: list[str] | None = None) -> dict:
        """`summarize` of the current matrix."""
        from pixelwise.metrics.scores import summarize

        return summarize(self.matrix, class_names)


class ConfusionMatrix(_StreamingCounts):
    """Streaming (C, C) confusion matrix for multiclass and binary (2 classes) label maps."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str = "cpu"):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch of label maps (same shape, any shape)."""
        m = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.matrix += m.to(self.matrix.device)


def multilabel_confusion(pred: ArrayLike, target: ArrayLike, ignore_index: int | None = 255) -> Tensor:
    """One 2x2 matrix per class: int64 (C, 2, 2), [c, t, p] counts target t / prediction p.

    pred and target are (N, C, *spatial) in {0, 1}; target elements equal to ignore_index skip.
    """
    pred = _as_tensor(pred, "pred")
    target = _as_tensor(target, "target")
    if pred.shape != target.shape or pred.ndim < 2:
        raise TaskError(f"multilabel pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (N, C, ...)")
    C = pred.shape[1]
    if bool(((pred != 0) & (pred != 1)).any()):
        raise TaskError("multilabel predictions must be 0 or 1 (threshold the probabilities first)")
    ignored = target == ignore_index if ignore_index is not None else torch.zeros_like(target, dtype=torch.bool)
    if bool((((target != 0) & (target != 1)) & ~ignored).any()):
        raise TaskError(f"multilabel target must hold 0, 1 or ignore_index={ignore_index}")
    cls = torch.arange(C, device=target.device, dtype=torch.int32).view(1, C, *([1] * (target.ndim - 2)))
    index = cls * 4 + target.to(torch.int32) * 2 + pred.to(torch.int32)
    index = torch.where(ignored, torch.full_like(index, 4 * C), index)  # spare bin, dropped below
    counts = torch.bincount(index.reshape(-1), minlength=4 * C + 1)[: 4 * C]
    return counts.reshape(C, 2, 2).to(torch.int64)


class MultilabelConfusion(_StreamingCounts):
    """Streaming per-class 2x2 confusion matrices (C, 2, 2) for multilabel tasks."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str = "cpu"):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(self.num_classes, 2, 2, dtype=torch.int64, device=device)

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch: pred and target (N, C, *spatial) in {0, 1}."""
        m = multilabel_confusion(pred, target, self.ignore_index)
        if m.shape[0] != self.num_classes:
            raise TaskError(f"expected {self.num_classes} classes on dim 1, got {m.shape[0]}")
        self.matrix += m.to(self.matrix.device)
