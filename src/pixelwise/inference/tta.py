"""Test-time augmentation: flips and scales, averaged in probability space.

Each view runs the model on a transformed input and maps the output back to the original
geometry. The views are averaged as probabilities (softmax for multiclass, sigmoid for
binary and multilabel), never as logits: the mean of logits is not the logit of the mean
probability, and a view that is very confident would otherwise dominate.

The averaged probabilities are turned back into "logits" (log p for softmax, logit(p) for
sigmoid), so a TTA model function plugs into anything that expects logits (tiling, the
task's decoding) and decodes to exactly the labels of the averaged probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelwise.errors import ConfigError
from pixelwise.tasks import Task

ModelFn = Callable[[Tensor], Tensor]  # (N, C_in, H, W) -> (N, K, H, W) logits


@dataclass(frozen=True)
class View:
    """One augmented view: optional flips, then a resize by `scale`."""

    hflip: bool = False
    vflip: bool = False
    scale: float = 1.0

    def forward(self, x: Tensor) -> Tensor:
        if self.hflip:
            x = x.flip(-1)
        if self.vflip:
            x = x.flip(-2)
        if self.scale != 1.0:
            h, w = x.shape[-2:]
            size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
            dtype = x.dtype
            x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
            if not dtype.is_floating_point:  # raw uint8 input (ONNX graph that normalises itself)
                x = x.round().clamp(0, torch.iinfo(dtype).max).to(dtype)
        return x

    def backward(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        """Map an output of the view back to the original geometry `size` (H, W)."""
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        if self.vflip:
            y = y.flip(-2)
        if self.hflip:
            y = y.flip(-1)
        return y


def parse_tta(spec: str | Iterable[str] | None) -> list[View]:
    """Views from a spec such as ["hflip", "vflip", "scale:0.75,1.0,1.25"] or "hflip,vflip".

    Flips and scales combine as a product: identity, each flip, and each scale of each; the
    identity view is always included. "d4"-style rotations are not offered (most models
    are not trained for them). Empty/None -> just the identity.
    """
    if spec is None:
        return [View()]
    if isinstance(spec, str):
        items = _split_spec(spec)
    else:
        items = [s.strip() for s in spec if s and s.strip()]
    flips: list[tuple[bool, bool]] = [(False, False)]
    scales: list[float] = [1.0]
    for item in items:
        if item == "hflip":
            flips.append((True, False))
        elif item == "vflip":
            flips.append((False, True))
        elif item in ("flips", "hvflip"):
            flips += [(True, False), (False, True), (True, True)]
        elif item.startswith("scale:") or item.startswith("scales:"):
            try:
                values = [float(v) for v in item.split(":", 1)[1].split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"bad TTA scales in {item!r}: expected e.g. scale:0.75,1.0,1.25") from None
            if not values or any(v <= 0 for v in values):
                raise ConfigError(f"TTA scales must be positive numbers, got {item!r}")
            scales = sorted(set(scales + values))
        elif item in ("none", ""):
            continue
        else:
            raise ConfigError(f"unknown TTA item {item!r}; accepted: hflip, vflip, flips, scale:S1,S2,...")
    flips = list(dict.fromkeys(flips))
    return [View(h, v, s) for s in scales for (h, v) in flips]


def _split_spec(spec: str) -> list[str]:
    # "hflip,vflip,scale:0.75,1.25" -> the numbers after "scale:" belong to it.
    items: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if items and items[-1].startswith(("scale:", "scales:")) and _is_number(part):
            items[-1] += "," + part
        else:
            items.append(part)
    return items


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def tta_probabilities(model_fn: ModelFn, x: Tensor, task: Task, views: Sequence[View]) -> Tensor:
    """Mean over `views` of the task's probabilities, (N, K, H, W) float32."""
    size = tuple(x.shape[-2:])
    total: Tensor | None = None
    for view in views:
        logits = view.backward(model_fn(view.forward(x)).float(), size)
        probs = task.probabilities(logits)
        total = probs if total is None else total + probs
    return total / len(views)


def probabilities_to_logits(probs: Tensor, task: Task, eps: float = 1e-7) -> Tensor:
    """Logits whose task activation gives back `probs` (log p for softmax, logit for sigmoid)."""
    p = probs.clamp(eps, 1 - eps) if task.kind != "multiclass" else probs.clamp_min(eps)
    if task.kind == "multiclass":
        return p.log()
    return torch.log(p) - torch.log1p(-p)


def with_tta(model_fn: ModelFn, task: Task, views: Sequence[View]) -> ModelFn:
    """A model function that runs all `views` and returns logits of the averaged probabilities."""
    if len(views) == 1 and views[0] == View():
        return model_fn

    def run(x: Tensor) -> Tensor:
        return probabilities_to_logits(tta_probabilities(model_fn, x, task, views), task)

    return run


class TTAModel(torch.nn.Module):
    """Wraps a model so its forward returns TTA logits; lets evaluation loops stay unchanged."""

    def __init__(self, model: torch.nn.Module, task: Task, views: Sequence[View]):
        super().__init__()
        self.model = model
        self.task = task
        self.views = list(views)

    def forward(self, x: Tensor) -> Tensor:
        return with_tta(self.model, self.task, self.views)(x)


__all__ = ["View", "parse_tta", "tta_probabilities", "probabilities_to_logits", "with_tta", "TTAModel"]
