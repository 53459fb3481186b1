"""Learning-rate schedules: linear warm-up, then poly or cosine decay, stepped per optimizer step.

They are `LambdaLR` factors of the base lr, so the scheduler's state_dict is tiny and a
resumed run continues at exactly the same point.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from pixelwise.training.config import ScheduleConfig


def lr_factor(config: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step `step` (0-based) out of `total_steps`."""
    total_steps = max(1, total_steps)
    warmup = min(config.warmup_steps, total_steps - 1)
    floor = config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            # Ramps from warmup_factor to 1 so the first steps of a fresh model stay small.
            alpha = step / max(1, warmup)
            return config.warmup_factor * (1 - alpha) + alpha
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if config.name == "poly":
            decay = (1 - progress) ** config.power
        elif config.name == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * progress))
        else:
            decay = 1.0
        return floor + (1 - floor) * decay

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig,
                    total_steps: int | Callable[[], int]) -> torch.optim.lr_scheduler.LambdaLR:
    """The scheduler for `total_steps` optimizer steps; call `.step()` after each optimizer step.

    `total_steps` may be a function, read at every step: a run whose plan changes (a time
    budget lowering the epoch count) then decays over the new length with no rebuilding.
    """
    if callable(total_steps):
        planned = total_steps
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, planned())(step))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
