"""`pixelwise data audit`: rank images and regions whose labels are probably wrong.

DATA mode: the split's images are dealt into K folds; K small models each train on K-1 folds
and predict the fold they never saw, so every image is scored out of sample (a model that
saw a label has memorised it and would agree with it). RUN mode: an existing run's model
scores a split it did not train on (val or test). Either way, per-class thresholds from
the out-of-sample probabilities decide where the prediction confidently disagrees with the
label (pixelwise.audit.scoring), and OUT gets:

    OUT/images.csv     rank, image, score, flagged_pixels, labelled_pixels, fold, top region
    OUT/regions.csv    image, rank in image, given label, suggested class, pixels, margin, bbox
    OUT/gallery/NAME.png   image | label | out-of-sample prediction | flagged regions
    OUT/index.html     the ranked list with the strips of the top images
    OUT/audit.json     settings, thresholds, timings

The models are kept in memory (they are small) and run twice over the data: once for the
thresholds, once for the flags, so no probability map is stored.
"""

from __future__ import annotations

import csv
import html
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from pixelwise.audit.scoring import (Disagreement, ThresholdAccumulator, confident_disagreement, image_score,
                                     regions, two_class)
from pixelwise.errors import ConfigError, DataError


@dataclass
class AuditSettings:
    """The K fold models: small and fast on purpose (they only need to be right where it is easy)."""

    folds: int = 3
    model: str = "unet"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"base_channels": 16, "depth": 3})
    epochs: int = 30
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 0.01
    seed: int = 0
    device: str = "auto"
    top: int = 24                 # images shown in the gallery
    min_region_pixels: int = 4


@dataclass
class ImageResult:
    index: int
    name: str
    fold: int
    score: float
    flagged: int
    labelled: int
    regions: list[Any]


@dataclass
class AuditResult:
    out: Path
    images: list[ImageResult]     # ranked, most suspicious first
    thresholds: list[float]
    seconds: float


# ---------------------------------------------------------------- models
def _train_fold(dataset: Any, indices: list[int], task: Any, in_channels: int, mean: list[float], std: list[float],
                settings: AuditSettings, device: torch.device, fold: int) -> nn.Module:
    from torch.utils.data import DataLoader, Subset

    from pixelwise.data import build_transforms
    from pixelwise.losses import build_loss
    from pixelwise.models import create_model
    from pixelwise.training.loop import train_one_epoch

    torch.manual_seed(settings.seed * 1000 + fold)
    image = dataset.read_image(indices[0])
    crop = min(settings.crop_size, *image.shape[:2])
    # Light augmentation: a small model on a small budget learns the easy cases sooner without
    # heavy rescaling, and the audit only needs it right where it is easy.
    dataset.transform = build_transforms(True, crop, mean, std, task.ignore_index, scale=(0.8, 1.25), rotate=0.0,
                                         vflip=True, color_jitter=0.1, blur=0.0)
    model = create_model(settings.model, num_classes=task.out_channels, in_channels=in_channels,
                         **settings.model_kwargs).to(device)
    loss_fn = build_loss("ce", task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed * 1000 + fold)
    loader = DataLoader(Subset(dataset, indices), batch_size=min(settings.batch_size, len(indices)), shuffle=True,
                        drop_last=False, generator=generator)
    steps = settings.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=steps, pct_start=0.1)
    for epoch in range(settings.epochs):
        train_one_epoch(model, loader, loss_fn, optimizer, schedule, device=device, epoch=epoch)
    return model.eval()


def _probabilities(model: nn.Module, task: Any, image: torch.Tensor, device: torch.device) -> np.ndarray:
    """(K, H, W) float32 for one normalised image (C, H, W); binary -> two classes."""
    from pixelwise.training.loop import predict_logits

    with torch.no_grad():
        logits = predict_logits(model, image[None].to(device))
    probs = task.probabilities(logits)[0].cpu().numpy()
    return two_class(probs) if task.kind == "binary" else probs


# ---------------------------------------------------------------- the audit
def _scored(models: dict[int, nn.Module], fold_of: dict[int, int], dataset: Any, task: Any,
            device: torch.device) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(index, probabilities (K, H, W), labels (H, W)) for every audited image, out of sample."""
    for i in sorted(fold_of):
        image, target = dataset[i]
        yield i, _probabilities(models[fold_of[i]], task, image, device), target.numpy()


def _audit(dataset: Any, task: Any, models: dict[int, nn.Module], fold_of: dict[int, int], out: Path,
           settings: AuditSettings, device: torch.device, colors: list, names: list[str],
           start: float, note: str, log: Callable[[str], None]) -> AuditResult:
    k = 2 if task.kind == "binary" else task.num_classes
    acc = ThresholdAccumulator(k, task.ignore_index)
    for _, probs, labels in _scored(models, fold_of, dataset, task, device):
        acc.add(probs, labels)
    thresholds = acc.thresholds()
    log("per-class thresholds: " + ", ".join(f"{n} {t:.3f}" for n, t in zip(names, thresholds)))
    results: list[ImageResult] = []
    strips: dict[int, tuple[np.ndarray, Disagreement, np.ndarray]] = {}
    for i, probs, labels in _scored(models, fold_of, dataset, task, device):
        d = confident_disagreement(probs, labels, thresholds, task.ignore_index)
        found = regions(d, labels, settings.min_region_pixels)
        results.append(ImageResult(i, dataset.samples[i].name, fold_of[i], image_score(d), int(d.flagged.sum()),
                                   d.labelled, found))
        strips[i] = (probs.argmax(axis=0), d, labels)
    results.sort(key=lambda r: (-r.score, r.index))
    out.mkdir(parents=True, exist_ok=True)
    _write_csvs(out, results, names)
    gallery = out / "gallery"
    gallery.mkdir(exist_ok=True)
    for r in results[: settings.top]:
        pred, d, labels = strips[r.index]
        _write_strip(gallery / f"{_safe(r.name)}.png", dataset.read_image(r.index), labels, pred, d, colors,
                     task.ignore_index)
    seconds = time.perf_counter() - start
    _write_atomic(out / "index.html", _page(results, settings.top, names, note))
    _write_atomic(out / "audit.json", json.dumps({
        "settings": asdict(settings), "thresholds": dict(zip(names, [float(t) for t in thresholds])),
        "images": len(results), "seconds": seconds, "mode": note,
    }, indent=2, default=str))
    log(f"audited {len(results)} images in {seconds:.0f}s: {out / 'images.csv'}, {out / 'index.html'}")
    return AuditResult(out, results, [float(t) for t in thresholds], seconds)


def audit_data(data: str, out: str | Path, *, split: str = "train", settings: AuditSettings | None = None,
               verbose: bool = True) -> AuditResult:
    """K-fold out-of-sample audit of `split` of `data` (rules in the module docstring)."""
    from pixelwise.data import build_transforms, open_dataset
    from pixelwise.data.normalization import measure_mean_std
    from pixelwise.runtime import resolve_device

    settings = settings or AuditSettings()
    log = _logger(verbose)
    start = time.perf_counter()
    if settings.folds < 2:
        raise ConfigError(f"--folds must be at least 2 (each model must leave images out), got {settings.folds}")
    raw = open_dataset(data, split)
    task = raw.task
    if task.kind == "multilabel":
        raise ConfigError("data audit does not handle multilabel data yet (binary and multiclass only)")
    n = len(raw)
    if n < settings.folds:
        raise DataError(data, f"split {split!r} has {n} images, fewer than --folds {settings.folds}")
    mean, std = measure_mean_std(raw)
    device = resolve_device(settings.device)
    order = np.random.default_rng(settings.seed).permutation(n)
    fold_of = {int(i): int(pos % settings.folds) for pos, i in enumerate(order)}
    train_set = open_dataset(data, split, task=task)
    eval_set = open_dataset(data, split, task=task, transform=build_transforms(False, None, mean, std, task.ignore_index))
    models: dict[int, nn.Module] = {}
    for fold in range(settings.folds):
        t0 = time.perf_counter()
        keep = [i for i in range(n) if fold_of[i] != fold]
        models[fold] = _train_fold(train_set, keep, task, raw.in_channels, mean, std, settings, device, fold)
        log(f"fold {fold + 1}/{settings.folds}: trained on {len(keep)} images in {time.perf_counter() - t0:.0f}s")
    names, colors = _classes(raw, task)
    note = f"{settings.folds}-fold out-of-sample audit of {data} ({split})"
    return _audit(eval_set, task, models, fold_of, Path(out), settings, device, colors, names, start, note, log)


def audit_run(run: str | Path, out: str | Path, *, data: str | None = None, split: str = "val",
              settings: AuditSettings | None = None, verbose: bool = True) -> AuditResult:
    """Audit a held-out split (`val` or `test`) with an existing run's model."""
    from pixelwise.checkpoint import load_checkpoint, load_model, resolve_checkpoint
    from pixelwise.data import build_transforms, open_dataset
    from pixelwise.runtime import resolve_device
    from pixelwise.training.builders import resolve_data_root

    settings = settings or AuditSettings()
    log = _logger(verbose)
    start = time.perf_counter()
    ckpt_path, _ = resolve_checkpoint(run)
    ckpt = load_checkpoint(ckpt_path)
    model, meta = load_model(ckpt)
    config_data = (ckpt.get("config") or {}).get("data", {})  # the training split is not in CheckpointMeta
    trained_on = config_data.get("train_split", "train")
    if split == trained_on:
        raise ConfigError(f"the run trained on split {split!r}: its model has memorised those labels, so it cannot "
                          f"audit them; audit a held-out split (--split val or test), or the data itself with "
                          f"`pixelwise data audit DATA --folds K`")
    data = data or meta.data_root
    if data is None:
        raise ConfigError(f"{ckpt_path}: the checkpoint does not record its data; pass --data")
    data = resolve_data_root(str(data))
    task = meta.task
    if task.kind == "multilabel":
        raise ConfigError("data audit does not handle multilabel data yet (binary and multiclass only)")
    dataset = open_dataset(data, split, task=task,
                           transform=build_transforms(False, None, meta.mean, meta.std, task.ignore_index))
    if len(dataset) == 0:
        raise DataError(data, f"split {split!r} holds no images")
    device = resolve_device(settings.device)
    model = model.to(device)
    log(f"auditing the held-out split {split!r} with {ckpt_path} (a model that never saw these labels)")
    names, colors = _classes(dataset, task)
    note = f"held-out audit of {data} ({split}) with {ckpt_path}"
    return _audit(dataset, task, {0: model}, {i: 0 for i in range(len(dataset))}, Path(out), settings, device,
                  colors, names, start, note, log)


# ---------------------------------------------------------------- outputs
def _classes(dataset: Any, task: Any) -> tuple[list[str], list[tuple[int, int, int]]]:
    from pixelwise.data.classes import default_colors

    names = list(dataset.classes.names)
    colors = [tuple(c) for c in dataset.classes.colors] or default_colors(len(names))
    if task.kind == "binary" and len(names) != 2:
        names = ["background", "foreground"]
    if len(colors) < len(names):
        colors = default_colors(len(names))
    return names, colors


def _write_csvs(out: Path, results: list[ImageResult], names: list[str]) -> None:
    def name_of(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    rows = []
    for rank, r in enumerate(results, 1):
        top = r.regions[0] if r.regions else None
        rows.append([rank, r.name, f"{r.score:.6f}", r.flagged, r.labelled, r.fold, len(r.regions),
                     name_of(top.label) if top else "", name_of(top.suggested) if top else "",
                     top.pixels if top else 0])
    _write_csv(out / "images.csv", ["rank", "image", "score", "flagged_pixels", "labelled_pixels", "fold",
                                    "regions", "top_region_label", "top_region_suggested", "top_region_pixels"], rows)
    region_rows = []
    for r in results:
        for j, g in enumerate(r.regions, 1):
            region_rows.append([r.name, j, name_of(g.label), name_of(g.suggested), g.pixels, f"{g.mean_margin:.4f}",
                                f"{g.score:.3f}", *g.bbox])
    _write_csv(out / "regions.csv", ["image", "region", "label", "suggested", "pixels", "mean_margin", "score",
                                     "x", "y", "width", "height"], region_rows)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    _write_atomic(path, buffer.getvalue())


def _write_strip(path: Path, image: np.ndarray, labels: np.ndarray, pred: np.ndarray, d: Disagreement,
                 colors: list, ignore_index: int) -> None:
    from PIL import Image

    from pixelwise.visualize import overlay

    given = overlay(image, labels, colors, alpha=0.6, ignore_index=ignore_index)
    predicted = overlay(image, pred, colors, alpha=0.6, ignore_index=None)
    flagged = overlay(image, d.flagged.astype(np.uint8), [(0, 0, 0), (255, 0, 0)], alpha=0.7, ignore_index=None)
    flagged[~d.flagged] = (flagged[~d.flagged] * 0.5).astype(np.uint8)  # dim what is not flagged
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    base = overlay(image, np.zeros(image.shape[:2], np.uint8), colors, alpha=0.0, ignore_index=None)
    Image.fromarray(np.concatenate([base, gap, given, gap, predicted, gap, flagged], axis=1)).save(path)


def _page(results: list[ImageResult], top: int, names: list[str], note: str) -> str:
    rows = []
    for rank, r in enumerate(results[:top], 1):
        g = r.regions[0] if r.regions else None
        what = (f"{html.escape(names[g.label] if g.label < len(names) else str(g.label))} labelled where the model "
                f"says {html.escape(names[g.suggested] if g.suggested < len(names) else str(g.suggested))} "
                f"({g.pixels} px)") if g else "no region"
        rows.append(f"<tr><td>{rank}</td><td>{html.escape(r.name)}</td><td>{r.score:.4f}</td><td>{what}</td>"
                    f'<td><img src="gallery/{html.escape(_safe(r.name))}.png" alt="{html.escape(r.name)}"></td></tr>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pixelwise data audit</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 1em 2em; }} td, th {{ border: 1px solid #ddd;
padding: 0.3em 0.6em; vertical-align: top; }} table {{ border-collapse: collapse; }} img {{ max-width: 900px; }}</style>
</head><body><h1>Likely label errors</h1>
<p>{html.escape(note)}. Score: the share of labelled pixels where the out-of-sample prediction confidently
disagrees with the label, weighted by how sure it is. Strips: image | label | prediction | flagged pixels (red).
All {len(results)} images are ranked in images.csv; regions in regions.csv.</p>
<table><thead><tr><th>rank</th><th>image</th><th>score</th><th>largest region</th><th>strip</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></body></html>
"""


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem if "." in name else name).strip("_") or "image"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _logger(verbose: bool) -> Callable[[str], None]:
    return (lambda text: print(text, file=sys.stderr)) if verbose else (lambda text: None)
