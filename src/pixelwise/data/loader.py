"""DataLoader set-up that keeps the cores busy without oversubscribing them."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _worker_init(worker_id: int) -> None:
    # Each worker decodes one image at a time: extra threads inside OpenCV or torch would
    # only fight the training process for the same cores.
    import cv2

    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32  # differs per worker and per epoch, derived from the loader seed
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        _seed_transform(info.dataset, seed)


def _seed_transform(dataset, seed: int) -> None:
    """albumentations keeps its own generator, copied unchanged into every forked worker:
    without a reseed all workers would apply the same augmentations."""
    while dataset is not None:
        transform = getattr(dataset, "transform", None)
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(seed)
            return
        dataset = getattr(dataset, "dataset", None)  # Subset and friends


def default_num_workers() -> int:
    """Two decoding workers on a small machine; never more than the cores there are."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(2 if cores <= 4 else cores // 2, 8))


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, num_workers: int | None = None,
                 distributed: bool = False, seed: int = 0) -> DataLoader:
    """Shuffled, drop-last batches for training; ordered batches for evaluation.

    Persistent workers (no re-fork per epoch), pin_memory only with CUDA, a DistributedSampler
    when `distributed` (call `loader.sampler.set_epoch(epoch)` each epoch), seeded workers.
    """
    workers = default_num_workers() if num_workers is None else num_workers
    generator = torch.Generator()
    generator.manual_seed(seed)
    if workers == 0:
        _seed_transform(dataset, seed)
    sampler = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=train)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=train and len(dataset) >= batch_size,  # a batch of 1 breaks BatchNorm
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=generator,
    )
