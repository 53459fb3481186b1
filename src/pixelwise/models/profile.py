"""Model cost: parameters and GFLOPs (counted by torch's FlopCounterMode, 2 FLOPs per MAC)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def model_cost(model: nn.Module, input_shape: Sequence[int] = (1, 3, 512, 512)) -> dict[str, float]:
    """{"params": parameter count, "gflops": forward GFLOPs for one batch of `input_shape`}."""
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(*input_shape, device=device))
    model.train(was_training)
    return {"params": params, "gflops": counter.get_total_flops() / 1e9}
