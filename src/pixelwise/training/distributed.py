"""Distributed data parallel through torchrun: the process group, the wrapper, rank-0 gates.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; when they are
absent everything here degrades to a single process with no process group at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pixelwise.collective import all_reduce_sum  # noqa: F401  (re-exported: D.all_reduce_sum)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU); a no-op for one process."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """DDP-wrap `model` when running distributed (optionally converting BatchNorm to SyncBatchNorm)."""
    if not info.enabled:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            from pixelwise.errors import ConfigError

            raise ConfigError("train.sync_batchnorm: PyTorch's SyncBatchNorm runs on CUDA devices only")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
