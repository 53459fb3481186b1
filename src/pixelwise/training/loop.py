"""The training loop as plain functions that read top to bottom.

`train_one_epoch` runs optimizer steps over one pass of a loader; `evaluate` scores a model
on a loader with one confusion matrix (summed across processes). The Trainer only wires
them to the optimizer, schedule, checkpoints, logging and distribution.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from pixelwise.errors import PixelwiseError
from pixelwise.collective import all_reduce_sum
from pixelwise.runtime import Runtime


class NonFiniteLossError(PixelwiseError):
    """The loss became NaN or inf: training stopped, the last good checkpoint is kept."""


def predict_logits(model: nn.Module, images: Tensor, max_pixels: int | None = None) -> Tensor:
    """Logits (N, C, H, W) for normalised images (N, C_in, H, W), as float32.

    The single seam where test-time augmentation or tiled inference plugs in. Images larger
    than `max_pixels` (default: the Predictor's budget) go through overlapping tiles with
    blended logits, so a huge evaluation image never needs whole-image activations.
    """
    from pixelwise.inference.predictor import DEFAULT_MAX_PIXELS
    from pixelwise.inference.tiling import tiled_logits

    budget = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    height, width = images.shape[-2:]
    if height * width <= budget:
        return model(images).float()
    per_image = []
    for image in images:
        # Already normalised: hand the float HWC array through unscaled, one tile per forward.
        hwc = image.float().permute(1, 2, 0).cpu().numpy()
        logits = tiled_logits(lambda x: model(x.to(images.device)), hwc, batch_size=1,
                              preprocess=lambda tile: torch.from_numpy(tile.copy()).permute(2, 0, 1))
        per_image.append(torch.from_numpy(logits))
    return torch.stack(per_image).to(images.device)


@dataclass
class EpochResult:
    loss: float                     # mean loss over optimizer steps of this process
    steps: int                      # optimizer steps taken
    images: int                     # images seen by this process
    seconds: float
    step_losses: list[float] = field(default_factory=list)  # one per optimizer step

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    device: torch.device,
    runtime: Runtime = Runtime(),
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    accumulate: int = 1,
    max_steps: int | None = None,
    on_step: Callable[[float, int], None] | None = None,
    epoch: int = 0,
) -> EpochResult:
    """One pass over `loader`: forward, loss, backward; an optimizer step every `accumulate` batches.

    `on_step(loss, images_so_far)` is called after each optimizer step (progress display).
    Raises NonFiniteLossError on a NaN/inf loss before the optimizer can apply it.
    """
    model.train()
    start = time.perf_counter()
    step_losses: list[float] = []
    pending: list[float] = []
    images = 0
    batches = iter(loader)
    total_batches = len(loader) if hasattr(loader, "__len__") else None
    if max_steps is not None and total_batches is not None:
        total_batches = min(total_batches, max_steps * accumulate)
    optimizer.zero_grad(set_to_none=True)
    index = 0
    for inputs, target in batches:
        if total_batches is not None and index >= total_batches:
            break
        inputs = runtime.to_device(inputs, device)
        target = target.to(device, non_blocking=True)
        # Last micro-batch of an accumulation group (or of the epoch) triggers the step.
        stepping = (index + 1) % accumulate == 0 or (total_batches is not None and index + 1 == total_batches)
        # DDP all-reduces gradients on every backward unless told to wait for the last micro-batch.
        sync = contextlib.nullcontext() if stepping or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with runtime.autocast(device):
                logits = model(inputs)
            loss = loss_fn(logits.float(), target)
            value = loss.detach().item()
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"loss became {value} at epoch {epoch + 1}, step {len(step_losses) + 1}: training stopped; "
                    f"the last good checkpoint is kept (lower the learning rate, enable train.grad_clip, "
                    f"or check the data for NaN)"
                )
            scaled = loss / accumulate
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        pending.append(value)
        images += inputs.shape[0]
        index += 1
        if stepping:
            _optimizer_step(model, optimizer, scaler, grad_clip)
            if scheduler is not None:
                scheduler.step()
            step_losses.append(sum(pending) / len(pending))
            pending.clear()
            if on_step is not None:
                on_step(step_losses[-1], images)
    if pending:  # loader without a length ended mid-group
        _optimizer_step(model, optimizer, scaler, grad_clip)
        if scheduler is not None:
            scheduler.step()
        step_losses.append(sum(pending) / len(pending))
    seconds = time.perf_counter() - start
    mean = sum(step_losses) / len(step_losses) if step_losses else float("nan")
    return EpochResult(loss=mean, steps=len(step_losses), images=images, seconds=seconds, step_losses=step_losses)


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, grad_clip: float | None) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def make_confusion(task: Any):
    """The confusion accumulator that fits the task (multilabel: one 2x2 per class)."""
    from pixelwise.metrics import ConfusionMatrix, MultilabelConfusion

    if task.kind == "multilabel":
        return MultilabelConfusion(task.num_classes, ignore_index=task.ignore_index)
    return ConfusionMatrix(task.num_classes, ignore_index=task.ignore_index)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    task: Any,
    *,
    device: torch.device,
    runtime: Runtime = Runtime(),
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    on_batch: Callable[[Tensor, Tensor], None] | None = None,
    on_logits: Callable[[Tensor, Tensor], None] | None = None,
) -> dict[str, Any]:
    """Score `model` on `loader`: {"confusion": accumulator (all-reduced), "loss": mean or None}.

    `on_batch(pred, target)` sees each batch's decoded labels (per-image scores, saving);
    `on_logits(logits, target)` sees the float32 logits on the device (calibration).
    Loader shards must not overlap across processes, so the reduced matrix counts each
    pixel exactly once.
    """
    model.eval()
    confusion = make_confusion(task)
    loss_sum = torch.zeros(2, dtype=torch.float64)  # (sum of loss * images, images)
    for inputs, target in loader:
        inputs = runtime.to_device(inputs, device)
        target = target.to(device, non_blocking=True)
        with runtime.autocast(device):
            logits = predict_logits(model, inputs)
        logits = logits.float()
        if loss_fn is not None:
            loss_sum += torch.tensor([loss_fn(logits, target).item() * inputs.shape[0], inputs.shape[0]],
                                     dtype=torch.float64)
        if on_logits is not None:
            on_logits(logits, target)
        pred = task.decode(logits).cpu()
        # Multilabel targets arrive as float {0, 1, ignore}; the confusion counts want integers.
        labels = target.cpu().long() if target.is_floating_point() else target.cpu()
        confusion.update(pred, labels)
        if on_batch is not None:
            on_batch(pred, labels)
    confusion.all_reduce()
    loss_sum = all_reduce_sum(loss_sum)
    loss = float(loss_sum[0] / loss_sum[1]) if loss_fn is not None and loss_sum[1] > 0 else None
    return {"confusion": confusion, "loss": loss}
