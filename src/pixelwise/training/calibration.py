"""`pixelwise calibrate RUN`: fit a temperature on the validation split and store it in the checkpoint.

The model runs uncalibrated over the split (full images, fp32); a uniform sample of at most
`max_pixels` counted pixels keeps its logits; `fit_temperature` minimises their NLL. The fit
is written into the checkpoint file (atomically, under the optional `calibration` key) and
into RUN_DIR/model.safetensors when that exists, so `evaluate`, `predict`, `serve` and
`export` all apply it from then on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from pixelwise.errors import ConfigError, DataError
from pixelwise.inference.calibration import DEFAULT_MAX_PIXELS, PixelSample, fit_temperature, nll_terms


def _sample_ece(sample: PixelSample, temperature: list[float]) -> float:
    """Top-label ECE of the sampled pixels at `temperature`."""
    from pixelwise.metrics.calibration import CalibrationAccumulator

    acc = CalibrationAccumulator(sample.task)
    t = torch.tensor(temperature, dtype=torch.float32).view(1, -1)
    logits = (sample.logits / t).T[None, :, :, None]  # (1, K, M, 1): pixels as one tall image
    target = sample.targets.T[None, :, :, None] if sample.task.kind == "multilabel" else sample.targets[None, :, None]
    acc.update(logits, target)
    return acc.ece()


def calibrate_checkpoint(source: str | Path, *, data: str | None = None, split: str = "val",
                         max_pixels: int = DEFAULT_MAX_PIXELS, per_label: bool = False, device: str = "auto",
                         limit: int | None = None, seed: int = 0, num_workers: int = 0,
                         verbose: bool = True) -> dict[str, Any]:
    """Fit the temperature of a checkpoint (or a run folder's best checkpoint) on `split` of
    `data` (default: the data it was trained on) and store it. Returns the calibration entry."""
    from pixelwise.checkpoint import load_checkpoint, load_model, resolve_checkpoint, save_checkpoint, save_safetensors
    from pixelwise.data import build_transforms, open_dataset
    from pixelwise.runtime import resolve_device
    from pixelwise.training.loop import evaluate
    from pixelwise.training.builders import limited, resolve_data_root

    ckpt_path, run_dir = resolve_checkpoint(source)
    ckpt = load_checkpoint(ckpt_path)  # the dict itself: it is written back with the new entry
    model, meta = load_model(ckpt)     # uncalibrated: a stored temperature is replaced, not stacked
    task = meta.task
    if per_label and task.kind == "multiclass":
        raise ConfigError("--per-label is only offered for binary and multilabel tasks: one temperature per "
                          "class would change multiclass argmax labels")
    if data is None:
        data = meta.data_root
        if data is None:
            raise ConfigError(f"{ckpt_path}: the checkpoint does not record its data; pass --data")
    data = resolve_data_root(str(data))
    transform = build_transforms(False, None, meta.mean, meta.std, task.ignore_index)
    dataset = limited(open_dataset(data, split, transform=transform, task=task), limit)
    if len(dataset) == 0:
        raise DataError(data, f"split {split!r} holds no images to calibrate on")
    dev = resolve_device(device)
    model = model.to(dev)
    sample = PixelSample(task, max_pixels, seed)
    start = time.perf_counter()
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers)
    evaluate(model, loader, task, device=dev, on_logits=sample.add)
    if len(sample) == 0:
        raise DataError(data, f"split {split!r} has no labelled pixels (every pixel is ignore_index)")
    temperature = fit_temperature(sample.logits, sample.targets, task, per_label=per_label)
    # Mean NLL per counted prediction (multilabel: per labelled pixel-class element).
    count = float((sample.targets != task.ignore_index).sum()) if task.kind == "multilabel" else float(len(sample))
    ones = torch.ones(len(temperature), dtype=torch.float64)
    entry = {
        "temperature": temperature,
        "per_label": bool(per_label and task.kind != "multiclass"),
        "nll_before": float(nll_terms(sample.logits, sample.targets, task, ones).sum()) / count,
        "nll_after": float(nll_terms(sample.logits, sample.targets, task, torch.tensor(temperature)).sum()) / count,
        "ece_before": _sample_ece(sample, [1.0] * len(temperature)),
        "ece_after": _sample_ece(sample, temperature),
        "pixels": len(sample),
        "pixels_seen": sample.seen,
        "data": str(data),
        "split": split,
    }
    ckpt["calibration"] = entry
    save_checkpoint(ckpt_path, ckpt)
    safetensors = run_dir / "model.safetensors"
    if safetensors.is_file() and ckpt_path.name == "best.pt":  # model.safetensors holds the best weights
        save_safetensors(safetensors, ckpt)
    if verbose:
        shown = ", ".join(f"{t:.4f}" for t in temperature)
        print(f"temperature {shown} fitted on {len(sample):,} of {sample.seen:,} pixels of {split!r} "
              f"in {time.perf_counter() - start:.1f}s; NLL {entry['nll_before']:.4f} -> {entry['nll_after']:.4f}, "
              f"ECE {entry['ece_before']:.4f} -> {entry['ece_after']:.4f} (on the fitted pixels)", file=sys.stderr)
        print(f"stored in {ckpt_path}", file=sys.stderr)
    return entry
