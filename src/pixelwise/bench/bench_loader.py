"""Data loading images/s against training images/s for the CamVid recipe.

Uses configs/camvid_unet.yaml (crop, batch, workers, augmentation, model) on CamVid from
../shared/data/camvid beside the repository when present, else on synthetic shapes. The
loader is timed alone (its worker processes prefetch, so timing it between training steps
would credit it with work done in the background); then training steps at the same batch
shape, in the default fast mode. Loader/training > 1 means loading keeps up with training.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch

from pixelwise.bench.harness import Context, area_result, measure, rate, repo_root, summarize
from pixelwise.bench.model_steps import fast_mode_source, prepare, train_step

AREA = "loader"
REPO_ROOT = repo_root()
CAMVID = REPO_ROOT.parent / "shared" / "data" / "camvid"
DEFAULT_RECIPE = {"data": {"crop_size": 256, "batch_size": 8, "num_workers": 2, "augment": {}},
                  "model": {"name": "unet", "kwargs": {"base_channels": 32, "depth": 4}}}


def load_recipe() -> tuple[dict[str, Any], str]:
    """The CamVid training recipe (data and model sections) and where it came from."""
    import yaml

    path = REPO_ROOT / "configs" / "camvid_unet.yaml"
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
        recipe["data"]["crop_size"], recipe["model"]["name"]  # noqa: B018  (both must be there)
        return recipe, str(path.relative_to(REPO_ROOT))
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return DEFAULT_RECIPE, "built-in defaults (configs/camvid_unet.yaml unreadable)"


def loader_windows(loader: Any, batches: int, windows: int) -> list[float]:
    """Seconds per window of `batches` batches, after one untimed batch (worker start-up)."""
    stream = itertools.chain.from_iterable(itertools.repeat(loader))  # cycle epochs
    next(stream)
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(batches):
            next(stream)
        times.append(time.perf_counter() - start)
    return times


def run(ctx: Context) -> dict[str, Any]:
    from pixelwise.data import build_loader, build_transforms, open_dataset
    from pixelwise.models import create_model

    recipe, recipe_source = load_recipe()
    data, model_spec = recipe["data"], recipe["model"]
    crop, batch = int(data["crop_size"]), int(data.get("batch_size", 8))
    workers = int(data.get("num_workers", 2))
    spec = str(CAMVID) if CAMVID.is_dir() else "synthetic:shapes?n=64&size=256"
    augment = {k: tuple(v) if isinstance(v, list) else v for k, v in (data.get("augment") or {}).items()}
    transform = build_transforms(True, crop, mean=[0.4, 0.4, 0.4], std=[0.3, 0.3, 0.3], **augment)
    dataset = open_dataset(spec, "train", transform=transform)
    num_classes = dataset.task.out_channels
    loader = build_loader(dataset, batch, train=True, num_workers=workers)

    windows, per_window = (3, 4) if ctx.quick else (5, 10)
    ctx.log(f"  loader: {windows} windows of {per_window} batches of {batch} from {spec}")
    load_s = summarize(loader_windows(loader, per_window, windows))
    del loader  # stop its workers before timing training

    ctx.log(f"  training {model_spec['name']} at {batch}x{crop}x{crop}")
    torch.manual_seed(0)
    model = prepare(create_model(model_spec["name"], num_classes=num_classes, **(model_spec.get("kwargs") or {})),
                    fast=True)
    x = torch.randn(batch, 3, crop, crop)
    y = torch.randint(0, num_classes, (batch, crop, crop))
    train_s = measure(train_step(model, x, y, fast=True), warmup=1, repeats=2 if ctx.quick else 5)

    load_ips, train_ips = rate(load_s, batch * per_window), rate(train_s, batch)
    threads = torch.get_num_threads()
    rows = [
        {"what": f"loader ({workers} workers, train transforms)", "ips": load_ips.median, "min": load_ips.min,
         "max": load_ips.max, "runs": load_ips.n, "threads": threads},
        {"what": f"training step {model_spec['name']} {model_spec.get('kwargs') or {}} (fast mode)",
         "ips": train_ips.median, "min": train_ips.min, "max": train_ips.max, "runs": train_ips.n,
         "threads": threads},
        {"what": "loader / training", "ips": load_ips.median / train_ips.median, "runs": None, "threads": threads},
    ]
    return area_result(
        command=ctx.command(AREA),
        columns=[("what", "what"), ("ips", "images/s (median; last row: ratio)"), ("min", "min"), ("max", "max"),
                 ("runs", "runs"), ("threads", "torch threads")],
        rows=rows,
        notes=[f"Data: {'CamVid train split' if CAMVID.is_dir() else 'synthetic shapes (CamVid not found)'}; "
               f"recipe {recipe_source}: crop {crop}, batch {batch}, {workers} workers. Fast mode via "
               f"{fast_mode_source()}. Loader and training are timed one after the other, each alone; in a "
               "real run both share the same cores, so a ratio near 1 means loading would slow training."],
    )
