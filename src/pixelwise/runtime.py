"""Where and how a model runs: device, precision and memory format, resolved in one place.

One vocabulary on every command, config and library call:

    device:        auto | cpu | cuda | cuda:N     (auto: CUDA when present, one GPU per torchrun process)
    precision:     auto | fp32 | bf16 | fp16      (auto: bf16 where it is a measured speed-up; on
                                                   CUDA bf16, or fp16 on GPUs without bf16)
    channels_last: auto | on | off                (auto: on exactly when precision is bf16 or fp16)

`resolve_runtime(...)` turns these words into one `Runtime` (device, autocast dtype,
channels_last) that training, evaluation, prediction, serving and the benchmarks all use.
Older spellings (`off`, `float32`, `bfloat16`, `true`/`false` ...) are still read, with a
one-line note on stderr saying the new word.

On CPUs with native bf16 (AVX512-BF16 / AMX) oneDNN runs convolutions in bf16 several
times faster than fp32 when the activations are channels_last (NHWC); on CUDA, autocast
to bf16 (or fp16 where bf16 is unsupported) uses tensor cores. Whether the CPU path is
really faster is decided by a short measurement, once per process, not by flags alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from pixelwise.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHANNELS_LAST = ("auto", "on", "off")
# Old words -> the vocabulary above (read with a note, never an error).
_OLD_PRECISIONS = {"off": "fp32", "float32": "fp32", "32": "fp32", "none": "fp32",
                   "bfloat16": "bf16", "float16": "fp16", "16": "fp16", "half": "fp16"}
_OLD_CHANNELS_LAST = {"true": "on", "false": "off", "yes": "on", "no": "off", "1": "on", "0": "off"}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# bf16 must beat fp32 by this factor on the probe conv to count as a real fast path
# (low, because a busy shared machine compresses the ratio; idle it is about 3x).
_MIN_SPEEDUP = 1.15
_noted: set[str] = set()


def deprecation_note(old: str, new: str) -> None:
    """Say once per process, in one line, that an old spelling was read as a new one."""
    if old in _noted:
        return
    _noted.add(old)
    print(f"note: {old} is an old spelling, read as {new}; write {new}", file=sys.stderr)


def normalize_precision(word: object, key: str = "precision", note: bool = True) -> str:
    """A precision word (new or old spelling) -> auto | fp32 | bf16 | fp16; ConfigError otherwise."""
    text = "off" if word is False else str(word).strip().lower()  # YAML 1.1 reads a bare `off` as False
    if text in PRECISIONS:
        return text
    if text in _OLD_PRECISIONS:
        if note:
            deprecation_note(f"{key}={text}", f"{key}={_OLD_PRECISIONS[text]}")
        return _OLD_PRECISIONS[text]
    raise ConfigError(f"{key}: unknown precision {word!r}; choose from {', '.join(PRECISIONS)}")


def normalize_channels_last(word: object, key: str = "channels_last") -> str:
    """A channels_last word -> auto | on | off. YAML reads `on`/`off` as booleans: both are fine."""
    if isinstance(word, bool):
        return "on" if word else "off"
    text = str(word).strip().lower()
    if text in CHANNELS_LAST:
        return text
    if text in _OLD_CHANNELS_LAST:
        deprecation_note(f"{key}={text}", f"{key}={_OLD_CHANNELS_LAST[text]}")
        return _OLD_CHANNELS_LAST[text]
    raise ConfigError(f"{key}: unknown value {word!r}; choose from {', '.join(CHANNELS_LAST)}")


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N -> a torch.device. `auto` takes CUDA when present; a bare
    `cuda` under torchrun takes the process's LOCAL_RANK GPU. ConfigError for a device that
    is not there."""
    if isinstance(name, torch.device):
        device = name
    else:
        text = str(name).strip().lower()
        if text == "auto":
            text = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(text)
        except RuntimeError:
            raise ConfigError(f"device: unknown device {name!r}; choose from auto, cpu, cuda, cuda:N") from None
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(f"device: unsupported device {name!r}; choose from auto, cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} asks for CUDA, but no CUDA device is available; use cpu or auto")
        if device.index is None and "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return device


def cpu_has_bf16_instructions() -> bool:
    """True when /proc/cpuinfo lists native bf16 (avx512_bf16 or amx_bf16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=1)
def measured_cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of a 64->64 3x3 conv on 4x64x96x96 channels_last (best of 5).

    Runs once per process (about 0.2 s). The two precisions alternate so a busy machine
    slows both alike. A CPU without bf16 instructions gets 0 without timing.
    """
    if not cpu_has_bf16_instructions():
        return 0.0
    conv32 = nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last).eval()
    conv16 = nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last, dtype=torch.bfloat16).eval()
    x32 = torch.randn(4, 64, 96, 96).contiguous(memory_format=torch.channels_last)
    x16 = x32.to(torch.bfloat16)
    best = {32: float("inf"), 16: float("inf")}
    with torch.no_grad():
        conv32(x32), conv16(x16)  # warm-up: oneDNN builds its kernels on first use
        for _ in range(5):
            for key, conv, x in ((32, conv32, x32), (16, conv16, x16)):
                start = time.perf_counter()
                conv(x)
                best[key] = min(best[key], time.perf_counter() - start)
    return best[32] / max(best[16], 1e-9)


def fast_mode_supported(device: str | torch.device) -> bool:
    """Whether reduced precision is a measured speed-up on `device` (keeping accuracy)."""
    device = _device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    if device.type == "cpu":
        return measured_cpu_bf16_speedup() >= _MIN_SPEEDUP
    return False


def fast_dtype(device: str | torch.device) -> torch.dtype:
    """bf16, except fp16 on CUDA GPUs without bf16 support."""
    device = _device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs. `precision` is resolved: fp32, bf16 or fp16, never auto."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain fp32."""
        return _DTYPES.get(self.precision)

    def autocast(self, device: torch.device | None = None) -> contextlib.AbstractContextManager:
        """Autocast to the reduced dtype (nothing in fp32). Keep loss computation outside."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=(device or self.device).type, dtype=self.dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        """`model` on the device, in channels_last memory format when that is on (in place, returned)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def to_device(self, images: Tensor, device: torch.device | None = None) -> Tensor:
        """A batch moved to the device, channels_last (NHWC) for 4-D batches when that is on."""
        images = images.to(device or self.device, non_blocking=True)
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def describe(self) -> str:
        """E.g. 'bf16 autocast + channels_last on cpu' (logs, run.json, BENCHMARKS.md)."""
        words = "fp32" if self.dtype is None else f"{self.precision} autocast"
        return f"{words}{' + channels_last' if self.channels_last else ''} on {self.device}"

    def to_dict(self) -> dict[str, object]:
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last}


def resolve_runtime(device: str | torch.device = "auto", precision: object = "auto",
                    channels_last: object = "auto") -> Runtime:
    """The one resolver: device, precision and channels_last words -> a `Runtime`.

    precision auto: bf16 on CUDA (fp16 on GPUs without bf16), bf16 on a CPU where it is a
    measured speed-up, otherwise fp32. fp16 needs CUDA (CPU fp16 convolutions are slow).
    channels_last auto: on exactly when the precision is reduced (the fast path runs NHWC).
    """
    dev = resolve_device(device)
    wanted = normalize_precision(precision)
    if wanted == "auto":
        if fast_mode_supported(dev):
            resolved = "fp16" if fast_dtype(dev) == torch.float16 else "bf16"
        else:
            resolved = "fp32"
    elif wanted == "fp16" and dev.type != "cuda":
        raise ConfigError("precision: fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    elif wanted == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision: this GPU ({torch.cuda.get_device_name(dev)}) has no bf16; use fp16 or fp32")
    else:
        resolved = wanted
    layout = normalize_channels_last(channels_last)
    use_nhwc = resolved != "fp32" if layout == "auto" else layout == "on"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return Runtime(device=dev, precision=resolved, channels_last=use_nhwc)


# ----------------------------------------------------------------- thin helpers over the resolver
def resolve_precision(precision: str, device: str | torch.device) -> str:
    """auto | fp32 | bf16 | fp16 -> the precision used on `device` (fp32, bf16 or fp16)."""
    return resolve_runtime(device, precision).precision


@contextlib.contextmanager
def autocast(device: str | torch.device, enabled: bool = True, precision: str = "auto") -> Iterator[None]:
    """Autocast to what `precision` resolves to on `device` (nothing when not `enabled`)."""
    with resolve_runtime(device, precision if enabled else "fp32").autocast():
        yield


def prepare_for_speed(model: nn.Module, device: str | torch.device, channels_last: bool = True) -> nn.Module:
    """Move `model` to `device`, in channels_last memory format when asked (in place, returned)."""
    return Runtime(_device(device), "fp32", channels_last).prepare(model)


def to_input_layout(x: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """A 4-D batch in channels_last layout (a no-op for other ranks or when already NHWC)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
