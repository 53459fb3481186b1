"""The speed probe: training and evaluation images per second of each plan candidate on this
machine, measured with the product's own training step (`train_one_epoch`) and runtime
resolver, within a time allowance, and cached per CPU model.

The probe runs at a small square size (PROBE_SIZE) on random inputs: throughput of the
convolutional candidates scales with pixels, and a small input keeps a short budget's 5 %
enough for every candidate. Candidates are probed cheapest first; one whose turn comes after
the allowance is spent is left out of the plan (its speed is unknown), never guessed.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

from pixelwise import atomic
from pixelwise.planning.fingerprint import cache_dir
from pixelwise.planning.plan import CANDIDATES, Speed

PROBE_SIZE = 96
PROBE_BATCH = 4
# Cheapest first, so a tight allowance still measures the models a slow machine needs.
PROBE_ORDER = ("unet16", "lraspp_mobilenetv3", "unet32", "unet_resnet18")


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux), for the cache key."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(runtime: Any, channels: int, classes: int) -> str:
    import torch

    device = runtime.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return (f"{name}|threads={torch.get_num_threads()}|{runtime.describe()}|in={channels}|out={classes}"
            f"|size={PROBE_SIZE}|batch={PROBE_BATCH}")


def _measure(cand, runtime: Any, channels: int, out_channels: int, task: Any, deadline: float) -> Speed | None:
    """Two timed training steps after one warm-up, then two timed evaluation passes."""
    import torch

    from pixelwise.losses import build_loss
    from pixelwise.models import create_model
    from pixelwise.training.loop import train_one_epoch

    torch.manual_seed(0)
    model = runtime.prepare(create_model(cand.model, num_classes=out_channels, in_channels=channels, **cand.kwargs))
    loss_fn = build_loss("bce" if task.kind != "multiclass" else "ce", task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(PROBE_BATCH, channels, PROBE_SIZE, PROBE_SIZE)
    if task.kind == "multilabel":
        target = torch.randint(0, 2, (PROBE_BATCH, task.num_classes, PROBE_SIZE, PROBE_SIZE)).float()
    else:
        target = torch.randint(0, task.num_classes, (PROBE_BATCH, PROBE_SIZE, PROBE_SIZE))
    batch = [(images, target)]
    train_one_epoch(model, batch, loss_fn, optimizer, None, device=runtime.device, runtime=runtime)  # warm-up
    if time.perf_counter() > deadline:
        return None
    result = train_one_epoch(model, batch * 2, loss_fn, optimizer, None, device=runtime.device, runtime=runtime)
    model.eval()
    x = runtime.to_device(images)
    sync = torch.cuda.synchronize if runtime.device.type == "cuda" else (lambda: None)  # CUDA runs async
    with torch.no_grad(), runtime.autocast():
        model(x)
        sync()
        started = time.perf_counter()
        for _ in range(2):
            model(x)
        sync()
        eval_seconds = time.perf_counter() - started
    return Speed(train=result.images_per_second, eval=2 * PROBE_BATCH / max(eval_seconds, 1e-9), size=PROBE_SIZE)


def probe(task: Any, channels: int, runtime: Any, allowance_seconds: float, *, use_cache: bool = True,
          say: Callable[[str], None] = lambda line: None) -> tuple[dict[str, Speed], float, bool]:
    """(speeds by candidate key, seconds spent, whether they came from the cache)."""
    key = machine_key(runtime, channels, task.out_channels)
    path = cache_dir() / "speeds.json"
    speeds: dict[str, Speed] = {}
    if use_cache:
        speeds = {k: Speed(**v) for k, v in (_load(path).get(key) or {}).items()}
        if all(name in speeds for name in PROBE_ORDER):
            return speeds, 0.0, True
    started = time.perf_counter()
    deadline = started + allowance_seconds
    by_key = {c.key: c for c in CANDIDATES}
    for name in (n for n in PROBE_ORDER if n not in speeds):  # a partial probe is completed later
        if speeds and time.perf_counter() > deadline:
            say(f"probe: allowance of {allowance_seconds:.1f} s spent; {name} not measured")
            continue
        # The first candidate is always measured in full: a plan needs at least one speed.
        speed = _measure(by_key[name], runtime, channels, task.out_channels, task,
                         deadline if speeds else float("inf"))
        if speed is not None:
            speeds[name] = speed
    spent = time.perf_counter() - started
    if use_cache:
        stored = _load(path)
        stored[key] = {k: dataclasses.asdict(v) for k, v in speeds.items()}
        try:
            atomic.write_text(path, json.dumps(stored, indent=1))
        except OSError:
            pass  # a read-only cache only costs measuring again
    return speeds, spent, False


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
