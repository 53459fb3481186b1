"""Which engine runs a checkpoint's model: PyTorch or onnxruntime, chosen by measurement.

`--backend auto` (the commands' default) times PyTorch at the resolved precision against
onnxruntime fp32 on one probe batch and keeps the faster; `torch` and `onnxruntime` force one.
onnxruntime is only ever used after its logits matched PyTorch fp32 on that batch:
max |logit difference| <= 1e-3 and argmax agreement >= 99.99 % (`parity`).

Both results are cached so a second run neither exports nor probes again:

    CACHE/<sha256 of the checkpoint, 16 hex>.onnx          the export (it passed export's own parity check)
    CACHE/<sha256 of the checkpoint, 16 hex>.backend.json  decisions, keyed by CPU model + probe size + precision

CACHE is `.pixelwise-cache/` beside the checkpoint, or `$PIXELWISE_HOME/cache` (default
~/.cache/pixelwise/cache) when that folder cannot be written. The key is the file's content,
so a retrained or replaced checkpoint never reuses an old export or decision.
A model that cannot be exported falls back to PyTorch with one line on stderr saying why.
Only CPUs are probed: on a GPU PyTorch runs (the onnxruntime build here is CPU-only).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from pixelwise import atomic
from pixelwise.errors import ConfigError, PixelwiseError

BACKENDS = ("auto", "torch", "onnxruntime")
MAX_ABS_DIFF = 1e-3            # parity: max |logit difference| against PyTorch fp32
MIN_ARGMAX_AGREEMENT = 0.9999  # parity: share of pixels whose class agrees
PROBE_SIZE = 256               # probe batch: 1 x C x 256 x 256 (a tile's scale, seconds at most)
ModelFn = Callable[[Tensor], Tensor]
Timer = Callable[[ModelFn, Tensor], float]


@dataclass
class Parity:
    max_abs_diff: float
    argmax_agreement: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= MAX_ABS_DIFF and self.argmax_agreement >= MIN_ARGMAX_AGREEMENT

    def describe(self) -> str:
        return f"max |logit diff| {self.max_abs_diff:.2g}, argmax agreement {100 * self.argmax_agreement:.3f} %"


@dataclass
class Choice:
    """The backend a model runs on, and why."""

    backend: str                                  # "torch" or "onnxruntime"
    precision: str                                # torch: the resolved precision; onnxruntime: fp32
    reason: str                                   # one line for the user / BENCHMARKS.md
    seconds: dict[str, float] = field(default_factory=dict)  # probe time per candidate
    cached: bool = False

    def to_dict(self) -> dict:
        return {"backend": self.backend, "precision": self.precision, "reason": self.reason, "seconds": self.seconds}


def parity(reference: Tensor, candidate: Tensor) -> Parity:
    """Compare logits (N, K, H, W) of a candidate backend with the fp32 reference."""
    if reference.shape != candidate.shape:
        return Parity(float("inf"), 0.0)
    diff = float((reference.float() - candidate.float()).abs().max()) if reference.numel() else 0.0
    if reference.shape[1] == 1:  # one binary channel: the class is the sign
        agree = ((reference > 0) == (candidate > 0)).float().mean()
    else:
        agree = (reference.argmax(1) == candidate.argmax(1)).float().mean()
    return Parity(diff if diff == diff else float("inf"), float(agree))  # NaN counts as failed


def median_seconds(fn: ModelFn, batch: Tensor, repeats: int = 3) -> float:
    """Median wall time of `fn(batch)` after one warm-up call."""
    fn(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def choose(torch_fn: ModelFn, torch_precision: str, reference: Tensor, candidates: dict[str, ModelFn],
           batch: Tensor, timer: Timer = median_seconds) -> Choice:
    """The fastest of PyTorch (`torch_fn`) and `candidates` whose logits pass `parity` with `reference`.

    `reference` is PyTorch fp32's logits on `batch`. A candidate that fails parity is never
    timed or chosen; PyTorch wins ties and is kept when nothing else is faster.
    """
    seconds = {f"torch {torch_precision}": timer(torch_fn, batch)}
    best, best_time = "torch", seconds[f"torch {torch_precision}"]
    notes = []
    for name, fn in candidates.items():
        try:
            check = parity(reference, fn(batch))
        except Exception as exc:  # a backend that cannot run the batch is refused like a wrong one
            notes.append(f"{name} refused: {type(exc).__name__}: {exc}")
            continue
        if not check.ok:
            notes.append(f"{name} refused: parity failed ({check.describe()})")
            continue
        seconds[f"{name} fp32"] = timer(fn, batch)
        if seconds[f"{name} fp32"] < best_time:
            best, best_time = name, seconds[f"{name} fp32"]
    timing = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in seconds.items())
    reason = f"fastest on the probe batch ({timing})" + (f"; {'; '.join(notes)}" if notes else "")
    return Choice(best, torch_precision if best == "torch" else "fp32", reason, seconds)


# ----------------------------------------------------------------- cache
def content_hash(path: str | Path) -> str:
    """sha256 of the file's bytes, 16 hex digits: the key of its export and decisions."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def pixelwise_home() -> Path:
    return Path(os.environ.get("PIXELWISE_HOME") or Path.home() / ".cache" / "pixelwise")


def cache_dir(checkpoint: str | Path) -> Path:
    """`.pixelwise-cache/` beside the checkpoint, or $PIXELWISE_HOME/cache if that is not writable."""
    beside = Path(checkpoint).resolve().parent / ".pixelwise-cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    home = pixelwise_home() / "cache"
    home.mkdir(parents=True, exist_ok=True)
    return home


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cached_export(checkpoint: str | Path, export: Callable[[Path, Path], object] | None = None) -> Path:
    """The checkpoint's ONNX export, made once (with export's parity check) and reused.

    Raises PixelwiseError when the model cannot be exported (the caller falls back to torch).
    """
    checkpoint = Path(checkpoint)
    target = cache_dir(checkpoint) / f"{content_hash(checkpoint)}.onnx"
    if target.is_file():
        return target
    if export is None:
        from pixelwise.export.onnx import export_onnx

        def export(source: Path, out: Path) -> object:
            return export_onnx(source, out)
    try:
        export(checkpoint, target)
    except PixelwiseError:
        raise
    except Exception as exc:  # exporters raise many types; the reason goes into the fallback line
        raise PixelwiseError(f"{type(exc).__name__}: {exc}") from None
    return target


def _decisions_path(checkpoint: Path) -> Path:
    return cache_dir(checkpoint) / f"{content_hash(checkpoint)}.backend.json"


def decision_key(precision: str, size: int) -> str:
    return f"{cpu_model()} | {size}x{size} | torch {precision}"


def read_decision(checkpoint: Path, key: str) -> Choice | None:
    try:
        entry = json.loads(_decisions_path(checkpoint).read_text()).get(key)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("backend") not in ("torch", "onnxruntime"):
        return None
    return Choice(entry["backend"], str(entry.get("precision", "fp32")), str(entry.get("reason", "")),
                  dict(entry.get("seconds") or {}), cached=True)


def write_decision(checkpoint: Path, key: str, choice: Choice) -> None:
    path = _decisions_path(checkpoint)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        entries = {}
    entries[key] = choice.to_dict()
    atomic.write_json(path, entries, indent=2)


def probe_batch(in_channels: int, size: int = PROBE_SIZE, seed: int = 0) -> Tensor:
    """A normalised-looking input (1, C, size, size): smooth shapes plus noise, fixed seed."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, in_channels, max(size // 16, 1), max(size // 16, 1), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return smooth + 0.1 * torch.randn(1, in_channels, size, size, generator=g)


def select(checkpoint: str | Path, backend: str = "auto", device: str = "auto", precision: str = "auto",
           channels_last: str = "auto", *, size: int = PROBE_SIZE, timer: Timer = median_seconds,
           export: Callable[[Path, Path], object] | None = None,
           candidates: Callable[[Path], dict[str, ModelFn]] | None = None) -> tuple[Choice, Path | None]:
    """Decide how to run `checkpoint`: (choice, the ONNX file to run when onnxruntime won).

    backend: auto (measure; cached), torch, or onnxruntime (forced, still refused when it
    fails parity). `timer`, `export` and `candidates` (ONNX path -> {name: model fn}) let
    tests inject timings, a failing exporter or a wrong backend.
    """
    from pixelwise.checkpoint import load_model
    from pixelwise.inference.predictor import torch_model_fn
    from pixelwise.runtime import Runtime, resolve_runtime

    checkpoint = Path(checkpoint)
    backend = check_backend_word(backend)
    runtime = resolve_runtime(device, precision, channels_last)
    if backend == "torch":
        return Choice("torch", runtime.precision, "asked for (--backend torch)"), None
    if backend == "auto" and runtime.device.type != "cpu":
        return Choice("torch", runtime.precision, f"PyTorch on {runtime.device} (only CPUs are probed)"), None
    try:
        onnx_path = cached_export(checkpoint, export)
    except PixelwiseError as exc:
        if backend == "onnxruntime":
            raise ConfigError(f"{checkpoint}: --backend onnxruntime, but the model cannot be exported: {exc}") from None
        choice = Choice("torch", runtime.precision, f"the model cannot be exported to ONNX ({exc})")
        say(f"torch {runtime.precision}: {choice.reason}")
        return choice, None
    key = decision_key(runtime.precision, size)
    if backend == "auto":
        known = read_decision(checkpoint, key)
        if known is not None:
            return known, onnx_path if known.backend == "onnxruntime" else None
    from pixelwise.inference.calibration import with_calibration

    model, meta = load_model(checkpoint)
    model = with_calibration(model, meta.temperature)  # as the export and Predictor.from_checkpoint run it
    batch = probe_batch(meta.in_channels, size)
    reference = torch_model_fn(model, Runtime())(batch)  # PyTorch fp32 on the CPU: the parity reference
    if candidates is None:
        from pixelwise.inference.onnx_backend import OnnxModel

        others: dict[str, ModelFn] = {"onnxruntime": OnnxModel(onnx_path, providers=["CPUExecutionProvider"])}
    else:
        others = candidates(onnx_path)
    if backend == "onnxruntime":
        check = parity(reference, others["onnxruntime"](batch))
        if not check.ok:
            raise ConfigError(f"{checkpoint}: onnxruntime fails the parity check against PyTorch fp32 "
                              f"({check.describe()}); use --backend torch")
        return Choice("onnxruntime", "fp32", f"asked for (--backend onnxruntime); parity: {check.describe()}"), onnx_path
    choice = choose(torch_model_fn(model, runtime), runtime.precision, reference, others, batch, timer)
    write_decision(checkpoint, key, choice)
    say(f"{choice.backend} {choice.precision}: {choice.reason}")
    return choice, onnx_path if choice.backend == "onnxruntime" else None


def check_backend_word(word: str) -> str:
    if word not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {word!r}; choose from {', '.join(BACKENDS)}")
    return word


def say(line: str) -> None:
    print(f"backend: {line}", file=sys.stderr)


__all__ = ["BACKENDS", "Choice", "Parity", "cached_export", "choose", "content_hash", "cpu_model", "parity",
           "probe_batch", "read_decision", "select", "write_decision", "decision_key", "median_seconds", "say"]
