"""`pixelwise data audit DATA|RUN --out DIR`: rank images and regions whose labels look wrong.

Registered under `pixelwise data` by commands/data.py (one line there)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register_data_action(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit", help="find likely label errors (K-fold out-of-sample models, confident learning)",
        description="DATA: K small models, each trained on K-1 folds, score every image of the split out of "
                    "sample; RUN: an existing run's model scores a held-out split (val/test). Images and regions "
                    "where the prediction confidently disagrees with the label are ranked into OUT/images.csv, "
                    "OUT/regions.csv and OUT/index.html (a gallery).")
    audit.add_argument("source", help="data folder / synthetic spec, or a run folder / checkpoint (held-out splits)")
    audit.add_argument("--out", required=True, type=Path, help="output folder")
    audit.add_argument("--folds", type=int, default=3, help="DATA: number of folds and models (default 3)")
    audit.add_argument("--split", help="split to audit (default: train for DATA, val for a RUN)")
    audit.add_argument("--data", help="RUN: data to read (default: the data the run trained on)")
    audit.add_argument("--model", default="unet", help="DATA: architecture of the fold models (default unet)")
    audit.add_argument("--model-kwargs", default='{"base_channels": 16, "depth": 3}',
                       help="DATA: JSON keyword arguments of the fold models (default: a small U-Net)")
    audit.add_argument("--epochs", type=int, default=30, help="DATA: epochs per fold model (default 30)")
    audit.add_argument("--batch-size", type=int, default=8)
    audit.add_argument("--crop-size", type=int, default=128, help="DATA: training crop (default 128)")
    audit.add_argument("--lr", type=float, default=0.01)
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--device", default="auto")
    audit.add_argument("--top", type=int, default=24, help="images shown in the gallery (default 24)")
    audit.set_defaults(func=run_audit)


def _is_run(source: str) -> bool:
    path = Path(source)
    return (path.is_dir() and (path / "checkpoints").is_dir()) or (path.is_file() and path.suffix in (".pt", ".pth"))


def run_audit(args: argparse.Namespace) -> int:
    from pixelwise.audit import AuditSettings, audit_data, audit_run
    from pixelwise.errors import ConfigError

    if args.epochs < 1 or args.top < 0:
        raise ConfigError("--epochs must be at least 1 and --top not negative")
    try:
        kwargs = json.loads(args.model_kwargs)
    except ValueError as exc:
        raise ConfigError(f"--model-kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise ConfigError("--model-kwargs must be a JSON object, e.g. '{\"depth\": 4}'")
    settings = AuditSettings(folds=args.folds, model=args.model, model_kwargs=kwargs, epochs=args.epochs,
                             batch_size=args.batch_size, crop_size=args.crop_size, lr=args.lr, seed=args.seed,
                             device=args.device, top=args.top)
    if _is_run(args.source):
        result = audit_run(args.source, args.out, data=args.data, split=args.split or "val", settings=settings)
    else:
        if args.data:
            raise ConfigError("--data is for auditing a run; for data, pass the data itself as the source")
        result = audit_data(args.source, args.out, split=args.split or "train", settings=settings)
    for rank, image in enumerate(result.images[:10], 1):
        print(f"{rank:>3}  {image.score:.4f}  {image.name}")
    return 0
