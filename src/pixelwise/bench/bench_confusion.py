"""Confusion-matrix update throughput: pixelwise.metrics.ConfusionMatrix vs torchmetrics.

Workload: 8 x 512 x 1024 uint8 label maps, 19 classes, about 5 % of target pixels set to the
ignore index 255 (a Cityscapes-sized batch). Before timing, both accumulate the same batch
and the matrices must be identical, otherwise the area fails instead of reporting a speed.
"""

from __future__ import annotations

from typing import Any

import torch

from pixelwise.bench.harness import Context, area_result, goal, interleave, paired_ratio, rate, summarize

AREA = "confusion"
NUM_CLASSES = 19
IGNORE = 255


def make_batch(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) uint8 label maps; target is pred with 30 % changed and 5 % ignored."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, NUM_CLASSES, shape, generator=gen, dtype=torch.uint8)
    pred = target.clone()
    changed = torch.rand(shape, generator=gen) < 0.3
    pred[changed] = torch.randint(0, NUM_CLASSES, shape, generator=gen, dtype=torch.uint8)[changed]
    target[torch.rand(shape, generator=gen) < 0.05] = IGNORE
    return pred, target


def check_identical(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Raise if ours and torchmetrics disagree on the confusion matrix of this batch."""
    from torchmetrics.classification import MulticlassJaccardIndex

    from pixelwise.metrics import ConfusionMatrix

    ours = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE)
    ours.update(pred, target)
    theirs = MulticlassJaccardIndex(num_classes=NUM_CLASSES, ignore_index=IGNORE)
    theirs.update(pred, target)
    if not torch.equal(ours.matrix.to(torch.int64), theirs.confmat.to(torch.int64)):
        diff = (ours.matrix.to(torch.int64) - theirs.confmat.to(torch.int64)).abs().sum().item()
        raise RuntimeError(f"ConfusionMatrix disagrees with torchmetrics ({diff} pixels differ)")
    expected = int((target != IGNORE).sum())
    if int(ours.matrix.sum()) != expected:
        raise RuntimeError(f"ConfusionMatrix counted {int(ours.matrix.sum())} pixels, expected {expected}")


def run(ctx: Context) -> dict[str, Any]:
    from torchmetrics.classification import MulticlassJaccardIndex

    from pixelwise.metrics import ConfusionMatrix

    shape = (8, 512, 1024)
    pred, target = make_batch(shape)
    check_identical(pred, target)

    ours = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE)
    tm_default = MulticlassJaccardIndex(num_classes=NUM_CLASSES, ignore_index=IGNORE)
    tm_novalidate = MulticlassJaccardIndex(num_classes=NUM_CLASSES, ignore_index=IGNORE, validate_args=False)
    times = interleave(
        {
            "pixelwise ConfusionMatrix.update": lambda: ours.update(pred, target),
            "torchmetrics MulticlassJaccardIndex.update": lambda: tm_default.update(pred, target),
            "torchmetrics (validate_args=False)": lambda: tm_novalidate.update(pred, target),
        },
        warmup=ctx.warmup,
        repeats=ctx.repeats,
    )
    ours_times = times["pixelwise ConfusionMatrix.update"]
    pixels = pred.numel()
    threads = torch.get_num_threads()
    rows = []
    for name, t in times.items():
        mpix = rate(summarize(t), pixels / 1e6)
        speedup = paired_ratio(t, ours_times)
        rows.append({
            "impl": name, "ms": summarize(t).median * 1e3, "mpix_s": mpix.median,
            "min": mpix.min, "max": mpix.max, "ours_speedup": speedup.median,
            "speedup_range": f"{speedup.min:.3g}–{speedup.max:.3g}", "n": len(t), "threads": threads,
        })
    vs_default = paired_ratio(times["torchmetrics MulticlassJaccardIndex.update"], ours_times).median
    return area_result(
        command=ctx.command(AREA),
        columns=[("impl", "update"), ("ms", "ms / update (median)"), ("mpix_s", "Mpixel/s"),
                 ("min", "min"), ("max", "max"), ("ours_speedup", "pixelwise speed-up"),
                 ("speedup_range", "speed-up min–max"), ("n", "runs"), ("threads", "threads")],
        rows=rows,
        goals=[goal("Confusion matrix update vs torchmetrics MulticlassJaccardIndex.update (defaults)",
                    ">= 10x", vs_default, vs_default >= 10, "x")],
        notes=[f"Batch {shape[0]} x {shape[1]} x {shape[2]} uint8, {NUM_CLASSES} classes, ~5 % ignored "
               f"(255). Results checked identical to torchmetrics' confusion matrix before timing. "
               "Speed-up = median over interleaved rounds of (their time / our time)."],
    )
