"""Score a checkpoint on a data split: dataset-level and per-image metrics, bootstrap
intervals, the confusion matrix, and optionally predictions and overlays.

Writes OUT/metrics.json, confusion_matrix.csv, confusion_matrix.npy and per_image.csv
(OUT defaults to RUN_DIR/eval). Images are scored at full resolution. Under torchrun every
process scores a disjoint shard and the matrices are summed, so the result equals a
single-process evaluation exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pixelwise import atomic
from pixelwise.errors import ConfigError, DataError, PixelwiseError
from pixelwise.runtime import Runtime, deprecation_note, normalize_precision, resolve_runtime
from pixelwise.training import distributed as D
from pixelwise.checkpoint import load_model, resolve_checkpoint
from pixelwise.training.loop import evaluate


def split_exists(data: str, split: str) -> bool:
    """Whether `data` has a non-empty `split` (the test split is optional)."""
    from pixelwise.data import open_dataset

    try:
        return len(open_dataset(data, split)) > 0
    except PixelwiseError:
        return False


def _per_image_row(name: str, matrix: np.ndarray) -> dict[str, Any]:
    from pixelwise.metrics import summarize

    s = summarize(matrix)
    return {"name": name, "miou": s["miou"], "mean_dice": s["mean_dice"], "pixel_accuracy": s["pixel_accuracy"]}


def _multilabel_bootstrap(matrices: np.ndarray, key: str, n_resamples: int, seed: int) -> list[float]:
    """Percentile interval of a dataset-level multilabel score, resampling images."""
    from pixelwise.metrics import summarize

    n = len(matrices)
    if n == 0:
        return [float("nan")] * 2
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_resamples):
        pick = rng.integers(0, n, n)
        stats.append(summarize(matrices[pick].sum(axis=0))[key])
    stats = np.asarray(stats, dtype=np.float64)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return [float("nan")] * 2
    return [float(v) for v in np.quantile(stats, [0.025, 0.975])]


def score_matrices(total: np.ndarray, per_image: list[tuple[str, np.ndarray]], class_names: list[str],
                   n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The result dict of docs/architecture.md from the dataset matrix and per-image matrices."""
    from pixelwise.metrics import bootstrap_ci, nanmean, summarize

    result = summarize(total, class_names)
    rows = [_per_image_row(name, m) for name, m in per_image]
    mats = np.stack([m for _, m in per_image]) if per_image else np.zeros((0, *total.shape), np.int64)
    result["per_image_miou"] = float(nanmean(np.array([r["miou"] for r in rows], dtype=np.float64))) if rows else float("nan")
    result["per_image_mean_dice"] = (float(nanmean(np.array([r["mean_dice"] for r in rows], dtype=np.float64)))
                                     if rows else float("nan"))
    if total.ndim == 3:  # multilabel (C, 2, 2)
        result["miou_ci"] = _multilabel_bootstrap(mats, "miou", n_resamples, seed)
        result["mean_dice_ci"] = _multilabel_bootstrap(mats, "mean_dice", n_resamples, seed)
    else:
        result["miou_ci"] = list(bootstrap_ci(mats, "miou", n_resamples, seed=seed))
        result["mean_dice_ci"] = list(bootstrap_ci(mats, "mean_dice", n_resamples, seed=seed))
    result["num_images"] = len(rows)
    result["per_image"] = rows
    return result


def write_eval_files(out_dir: Path, result: dict[str, Any], class_names: list[str]) -> None:
    """metrics.json, confusion_matrix.csv/.npy and per_image.csv in `out_dir`."""
    from pixelwise.metrics import jsonable

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "metrics.json", json.dumps(jsonable(result), indent=2))
    matrix = np.asarray(result["confusion_matrix"], dtype=np.int64)
    atomic.save_npy(out_dir / "confusion_matrix.npy", matrix)
    if matrix.ndim == 3:  # multilabel: one row per class
        rows = [["class", "tn", "fp", "fn", "tp"]]
        rows += [[name, m[0, 0], m[0, 1], m[1, 0], m[1, 1]] for name, m in zip(class_names, matrix)]
    else:  # rows = target class, columns = predicted class
        rows = [["target \\ predicted", *class_names]]
        rows += [[name, *row.tolist()] for name, row in zip(class_names, matrix)]
    atomic.write_csv(out_dir / "confusion_matrix.csv", rows)
    fields = ["name", "miou", "mean_dice", "pixel_accuracy"]
    per_image = [fields] + [[("" if isinstance(v, float) and np.isnan(v) else v) for v in (row.get(k, "") for k in fields)]
                            for row in result["per_image"]]
    atomic.write_csv(out_dir / "per_image.csv", per_image)


def _safe_name(name: str) -> str:
    return name.replace("/", "__").replace("\\", "__")


def save_prediction_images(run_dir: Path, dataset: Any, index: int, pred: np.ndarray, task: Any,
                           colors: list) -> None:
    """RUN_DIR/predictions/NAME.png (palette label map or bit-packed multilabel) and overlays/NAME.png."""
    from pixelwise.visualize import overlay, save_label_png, save_multilabel_png

    name = _safe_name(Path(dataset.samples[index].name).stem if dataset.samples[index].name else str(index))
    if task.kind == "multilabel":
        save_multilabel_png(run_dir / "predictions" / f"{name}.png", pred)
    else:
        save_label_png(run_dir / "predictions" / f"{name}.png", pred, colors)
    image = dataset.read_raw(index)[0]
    atomic.save_image(run_dir / "overlays" / f"{name}.png", overlay(image, pred, colors, ignore_index=task.ignore_index))


def evaluate_checkpoint(source: str | Path, *, data: str | None = None, split: str = "test",
                        out_dir: str | Path | None = None, batch_size: int = 1, device: str = "auto",
                        precision: str = "auto", channels_last: str = "auto", limit: int | None = None,
                        num_workers: int = 0, save_predictions: int = 0, n_resamples: int = 1000,
                        verbose: bool = True, tta: str | None = None, amp: str | None = None,
                        calibrated: bool = True, backend: str = "torch") -> dict[str, Any]:
    """Score a checkpoint (or a run folder's best checkpoint) on `split` of `data` (default:
    the data it was trained on). Returns the result dict; writes the eval files on rank 0.

    `save_predictions=N` also writes predictions/ and overlays/ for the first N images.
    `tta` (e.g. "hflip,scale:0.75,1.0,1.25") averages probabilities over those views.
    `device`, `precision`, `channels_last` take the words of `pixelwise.runtime`; `amp` is
    precision's old name (read with a note).
    `calibrated=False` ignores a temperature stored by `pixelwise calibrate` (to compare).
    `backend`: torch, onnxruntime or auto, as in `pixelwise.inference.backend` (onnxruntime
    runs the checkpoint's cached, parity-checked export).
    """
    from pixelwise.data import build_transforms, open_dataset
    from pixelwise.training.builders import limited, resolve_data_root, shard_for_eval

    ckpt_path, run_dir = resolve_checkpoint(source)
    model, meta = load_model(ckpt_path)
    if data is None:
        data = meta.data_root
        if data is None:
            raise ConfigError(f"{ckpt_path}: the checkpoint does not record its data; pass --data")
    data = resolve_data_root(str(data))
    out = Path(out_dir) if out_dir is not None else run_dir / "eval"
    if amp is not None:
        deprecation_note(f"amp={amp}", f"precision={normalize_precision(amp, note=False)}")
        precision = amp
    runtime = resolve_runtime(device, precision, channels_last)
    temperature_in_graph = False
    if backend != "torch":
        from pixelwise.inference.backend import say, select
        from pixelwise.inference.onnx_backend import OnnxModule

        choice, onnx_path = select(ckpt_path, backend, device, precision, channels_last)
        if onnx_path is not None and not calibrated and meta.temperature is not None:
            say(f"torch {runtime.precision}: uncalibrated scores need the model without its temperature, "
                "which the ONNX export holds")
        elif onnx_path is not None:  # onnxruntime on the CPU, fp32: the export replaces the PyTorch model
            model, runtime, temperature_in_graph = OnnxModule(onnx_path), Runtime(), True
    dev = runtime.device
    info = D.init_distributed(dev)
    task = meta.task
    class_names = list(meta.class_names or [str(i) for i in range(task.num_classes)])
    colors = list(meta.class_colors)
    if not colors:
        from pixelwise.data.classes import default_colors

        colors = default_colors(task.num_classes)
    transform = build_transforms(False, None, meta.mean, meta.std, task.ignore_index)
    dataset = limited(open_dataset(data, split, transform=transform, task=task), limit)
    if len(dataset) == 0:
        raise DataError(data, f"split {split!r} holds no images")
    base = dataset.dataset if hasattr(dataset, "indices") else dataset
    shard, indices = shard_for_eval(dataset, info)
    # Whole images of different sizes cannot share a batch; batch_size > 1 needs equal sizes.
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    if calibrated and not temperature_in_graph:  # the export already divides by the temperature
        from pixelwise.inference.calibration import with_calibration

        model = with_calibration(model, meta.temperature)
    model = runtime.prepare(model)
    if tta:
        from pixelwise.inference.tta import TTAModel, parse_tta

        model = TTAModel(model, task, parse_tta(tta))

    per_image: list[tuple[int, str, np.ndarray]] = []
    cursor = iter(indices)

    def on_batch(pred: torch.Tensor, target: torch.Tensor) -> None:
        from pixelwise.metrics import confusion_matrix, multilabel_confusion

        for p, t in zip(pred, target):
            i = next(cursor)
            if task.kind == "multilabel":
                m = multilabel_confusion(p[None], t[None], task.ignore_index)
            else:
                m = confusion_matrix(p, t, task.num_classes, task.ignore_index)
            per_image.append((i, base.samples[i].name, m.numpy()))
            if i < save_predictions:
                save_prediction_images(run_dir, base, i, p.numpy(), task, colors)

    calibration, uncertainty, on_logits = trust_accumulators(task)
    scored = evaluate(model, loader, task, device=dev, runtime=runtime, on_batch=on_batch, on_logits=on_logits)
    calibration.all_reduce()
    uncertainty.all_reduce()
    if info.enabled:
        gathered: list[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, per_image)
        per_image = [row for part in gathered for row in part]
    per_image.sort(key=lambda row: row[0])
    total = scored["confusion"].matrix.cpu().numpy()
    result = score_matrices(total, [(name, m) for _, name, m in per_image], class_names, n_resamples)
    result.update({"checkpoint": str(ckpt_path), "data": data, "split": split,
                   "epoch": meta.epoch, "task": task.kind, "tta": tta or None})
    result.update(calibration_result(calibration, class_names, meta.temperature if calibrated else None))
    result["uncertainty"] = {"method": "entropy", **uncertainty.summary()}
    if info.is_main:
        write_eval_files(out, result, class_names)
        if verbose:
            print(format_table(result), file=sys.stderr)
            print(f"evaluation files: {out}", file=sys.stderr)
    D.barrier()
    return result


def trust_accumulators(task: Any) -> tuple[Any, Any, Any]:
    """(calibration bins, error-by-entropy bins, on_logits hook for `evaluate`) for one task."""
    from pixelwise.inference.uncertainty import bernoulli_entropy, softmax_entropy
    from pixelwise.metrics.calibration import CalibrationAccumulator, ErrorByUncertainty, pixel_slabs

    calibration, by_uncertainty = CalibrationAccumulator(task), ErrorByUncertainty()

    def on_logits(logits: torch.Tensor, target: torch.Tensor) -> None:
        calibration.update(logits, target)
        for part, labels in pixel_slabs(logits, target):  # bounded memory on huge images
            probs = task.probabilities(part)
            if task.kind == "multiclass":
                umap = softmax_entropy(probs, dim=1)  # (1, h, W)
            else:  # binary (1, h, W) or multilabel per element (1, C, h, W)
                umap = bernoulli_entropy(probs[:, 0] if task.kind == "binary" else probs)
            pred = task.decode(part)
            keep = labels != task.ignore_index
            by_uncertainty.update(umap[keep], pred.to(labels.dtype)[keep] != labels[keep])

    return calibration, by_uncertainty, on_logits


def calibration_result(calibration: Any, class_names: list[str], temperature: Any) -> dict[str, Any]:
    """ece, mce, classwise_ece at the top level and the reliability bins under "calibration"."""
    summary = calibration.summary(class_names)
    # None: the probabilities as the model gives them (never calibrated, or --uncalibrated).
    summary["temperature"] = None if temperature is None else list(temperature)
    return {"ece": summary["ece"], "mce": summary["mce"], "classwise_ece": summary["classwise_ece"],
            "calibration": summary}


def format_table(result: dict[str, Any]) -> str:
    """The per-class table and the headline numbers as plain text."""
    lines = [f"{'class':<20} {'IoU':>7} {'Dice':>7} {'Acc':>7} {'support':>10}"]
    for name, s in result["per_class"].items():
        cells = [("   n/a" if s[k] is None or np.isnan(s[k]) else f"{s[k]:7.4f}") for k in ("iou", "dice", "accuracy")]
        lines.append(f"{name:<20} {cells[0]:>7} {cells[1]:>7} {cells[2]:>7} {s['support']:>10}")
    low, high = result.get("miou_ci", [float("nan")] * 2)
    lines.append(f"mIoU {result['miou']:.4f} (95% CI {low:.4f}-{high:.4f})  pixel acc {result['pixel_accuracy']:.4f}  "
                 f"mean acc {result['mean_accuracy']:.4f}  mean Dice {result['mean_dice']:.4f}  "
                 f"images {result['num_images']}")
    if "ece" in result:
        temperature = (result.get("calibration") or {}).get("temperature")
        applied = f"temperature {', '.join(f'{t:.3f}' for t in temperature)}" if temperature else "uncalibrated"
        lines.append(f"calibration ({applied}): ECE {_fmt(result['ece'])}  MCE {_fmt(result['mce'])}  "
                     f"classwise ECE {_fmt(result['classwise_ece'])}  (15 bins)")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"
