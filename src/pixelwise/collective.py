"""Sums across torch.distributed processes: the one reduction that metrics (confusion
matrices) and training (losses, timings) share. It sits in the lowest layer so that metrics
need not import training (docs/architecture.md, "Layers")."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor across processes into a new tensor on `value`'s device (unchanged for one
    process). Every reduction in the project goes through here: losses, timings, confusion matrices."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    if value.device.type == "cpu" and dist.get_backend() == "nccl":
        # NCCL reduces GPU tensors only; scalars and confusion matrices live on the CPU.
        on_gpu = value.to(f"cuda:{torch.cuda.current_device()}")
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        return on_gpu.to(value.device)
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
