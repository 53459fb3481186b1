"""The fast path shared by training and inference: reduced precision + channels_last.

On CPUs with native bf16 (AVX512-BF16 / AMX) oneDNN runs convolutions in bf16 several
times faster than fp32 when the activations are channels_last (NHWC); on CUDA, autocast
to bf16 (or fp16 where bf16 is unsupported) uses tensor cores. Whether the CPU path is
really faster is decided by a short measurement, once per process, not by flags alone.

precision: "fp32" (never reduce), "bf16" (always, where the device supports it), or
"auto" (bf16/fp16 only when `fast_mode_supported(device)`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from pixelwise.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "auto")
# bf16 must beat fp32 by this factor on the probe conv to count as a real fast path
# (low, because a busy shared machine compresses the ratio; idle it is about 3x).
_MIN_SPEEDUP = 1.15


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


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


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """'fp32' | 'bf16' | 'auto' -> the precision to use on `device` ('fp32', 'bf16' or 'fp16')."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return "fp32"
    if precision == "auto" and not fast_mode_supported(device):
        return "fp32"
    return "fp16" if fast_dtype(device) == torch.float16 else "bf16"


@contextlib.contextmanager
def autocast(device: str | torch.device, enabled: bool = True, precision: str = "auto") -> Iterator[None]:
    """Autocast to the fast dtype when `enabled` and `precision` resolves to bf16/fp16.

    Loss computation should stay outside (or cast logits to float32 first).
    """
    device = _device(device)
    resolved = resolve_precision(precision, device) if enabled else "fp32"
    if resolved == "fp32":
        yield
        return
    dtype = torch.float16 if resolved == "fp16" else torch.bfloat16
    with torch.autocast(device.type, dtype=dtype):
        yield


def prepare_for_speed(model: nn.Module, device: str | torch.device, channels_last: bool = True) -> nn.Module:
    """Move `model` to `device`, in channels_last memory format when asked (in place, returned)."""
    model = model.to(_device(device))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_input_layout(x: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """A 4-D batch in channels_last layout (a no-op for other ranks or when already NHWC)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
