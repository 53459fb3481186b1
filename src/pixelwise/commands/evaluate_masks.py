"""`pixelwise evaluate-masks`: score a folder of predicted label PNGs against ground truth.

No model is involved: predictions made by any tool can be scored with the same metrics as
`pixelwise evaluate`. Files are matched by stem (`a.png` with `a.png`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from pixelwise.errors import ConfigError, DataError, TaskError

MASK_SUFFIXES = (".png",)


def read_label_png(path: Path):
    """A label PNG -> (H, W) integer numpy array (palette PNGs give their indices); the same
    reader and rules as training data (`pixelwise.data.masks.read_label_map`)."""
    from pixelwise.data.masks import read_label_map

    return read_label_map(path)


def _list_masks(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(folder, f"{what} folder does not exist")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in MASK_SUFFIXES}
    if not files:
        raise DataError(folder, f"{what} folder holds no .png masks")
    return files


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def evaluate_mask_folders(pred_dir: str | Path, target_dir: str | Path, num_classes: int,
                          ignore_index: int | None = 255, class_names: list[str] | None = None,
                          n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Score every predicted PNG against the target PNG with the same stem.

    Returns the metrics result dict (docs/architecture.md), with NaN for undefined scores.
    Raises DataError for missing/unmatched files, unreadable files and size mismatches.
    """
    from pixelwise.metrics import PerImageScores

    pred_dir, target_dir = Path(pred_dir), Path(target_dir)
    if num_classes < 1:
        raise ConfigError(f"--num-classes must be at least 1, got {num_classes}")
    if n_resamples < 0:
        raise ConfigError(f"the number of bootstrap resamples must be >= 0, got {n_resamples}")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"{len(class_names)} class names given for {num_classes} classes")
    preds = _list_masks(pred_dir, "prediction")
    targets = _list_masks(target_dir, "target")
    missing = sorted(set(targets) - set(preds))
    if missing:
        raise DataError(pred_dir, f"no prediction for {len(missing)} target mask(s): {_few(missing)}")
    extra = sorted(set(preds) - set(targets))
    if extra:
        raise DataError(target_dir, f"no target mask for {len(extra)} prediction(s): {_few(extra)}")

    scores = PerImageScores(num_classes, ignore_index)
    for stem, target_path in targets.items():
        pred_path = preds[stem]
        pred, target = read_label_png(pred_path), read_label_png(target_path)
        if pred.shape != target.shape:
            raise DataError(pred_path, f"size {pred.shape[1]}x{pred.shape[0]} (WxH) differs from target "
                                       f"{target_path} {target.shape[1]}x{target.shape[0]}")
        try:
            scores.add(pred, target, stem)
        except TaskError as exc:
            raise DataError(f"{pred_path} / {target_path}", str(exc)) from None
    return scores.summary(class_names, n_resamples=n_resamples, seed=seed)


# ------------------------------------------------------------------------ CLI
def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def format_table(result: dict[str, Any]) -> str:
    """A readable summary: overall scores, then one row per class."""
    lo, hi = result["miou_ci"]
    dlo, dhi = result["mean_dice_ci"]
    lines = [
        f"images            {result['num_images']}",
        f"pixel accuracy    {_fmt(result['pixel_accuracy'])}",
        f"mean accuracy     {_fmt(result['mean_accuracy'])}",
        f"mIoU              {_fmt(result['miou'])}   95% CI [{_fmt(lo)}, {_fmt(hi)}] (bootstrap over images)",
        f"per-image mIoU    {_fmt(result['per_image_miou'])}",
        f"fwIoU             {_fmt(result['fwiou'])}",
        f"mean Dice         {_fmt(result['mean_dice'])}   95% CI [{_fmt(dlo)}, {_fmt(dhi)}]",
        "",
    ]
    width = max([5] + [len(n) for n in result["per_class"]])
    lines.append(f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'Acc':>7}  {'Prec':>7}  {'support':>10}")
    for name, s in result["per_class"].items():
        lines.append(f"{name:<{width}}  {_fmt(s['iou']):>7}  {_fmt(s['dice']):>7}  {_fmt(s['accuracy']):>7}  "
                     f"{_fmt(s['precision']):>7}  {s['support']:>10}")
    lines.append("n/a: the class is absent from target and prediction (left out of the means); see docs/metrics.md")
    return "\n".join(lines)


def _class_names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def handler(args: argparse.Namespace) -> int:
    from pixelwise.metrics import jsonable

    ignore = None if str(args.ignore_index).lower() == "none" else int(args.ignore_index)
    result = evaluate_mask_folders(args.pred, args.target, args.num_classes, ignore,
                                   _class_names(args.class_names), n_resamples=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps(jsonable(result), indent=2, allow_nan=False))
    else:
        print(format_table(result))
    return 0


def _ignore_arg(value: str) -> str:
    if value.lower() != "none":
        try:
            int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {value!r}") from None
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate-masks",
        help="score a folder of predicted label PNGs against ground-truth PNGs (no model)",
        description="Score predicted label PNGs against ground-truth PNGs matched by file stem: "
                    "pixel accuracy, mean accuracy, mIoU (dataset-level and per-image, with a "
                    "bootstrap 95%% interval), fwIoU, Dice, per-class scores.",
    )
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted label PNGs")
    p.add_argument("--target", required=True, type=Path, help="folder of ground-truth label PNGs")
    p.add_argument("--num-classes", required=True, type=int, help="number of classes (ids 0..N-1)")
    p.add_argument("--ignore-index", default="255", type=_ignore_arg,
                   help="target value that is not scored (default 255; 'none' to count every pixel)")
    p.add_argument("--class-names", nargs="+", metavar="NAME", help="class names, in id order (space or comma separated)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON (NaN -> null)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.set_defaults(func=handler)
