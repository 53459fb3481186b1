"""Inference and training steps of a model in fp32 NCHW or in the default fast mode.

The fast mode is the project's own CPU fast path (pixelwise.runtime: bf16 autocast +
channels_last) when that module is there; otherwise the same two settings applied with
plain torch, and `fast_mode_source()` says which one was measured.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

CPU = torch.device("cpu")


def fast_mode_source() -> str:
    """Which code set the fast mode up, and the precision its 'auto' resolved to here."""
    runtime = _runtime()
    if runtime is None:
        return "plain torch bf16 autocast + channels_last (pixelwise.runtime not available)"
    try:
        resolved = runtime.resolve_precision("auto", CPU)
    except Exception as exc:  # an older runtime without resolve_precision
        resolved = f"unknown ({type(exc).__name__})"
    return f"pixelwise.runtime (precision 'auto' resolved to {resolved}) + channels_last"


def _runtime() -> Any | None:
    try:
        import pixelwise.runtime as runtime
    except ImportError:
        return None
    return runtime


def prepare(model: nn.Module, fast: bool) -> nn.Module:
    """The model as the fast path runs it (channels_last) or untouched fp32 NCHW."""
    if not fast:
        return model
    runtime = _runtime()
    if runtime is not None and hasattr(runtime, "prepare_for_speed"):
        return runtime.prepare_for_speed(model, CPU)
    return model.to(memory_format=torch.channels_last)


def to_input(x: torch.Tensor, fast: bool) -> torch.Tensor:
    if not fast:
        return x
    runtime = _runtime()
    if runtime is not None and hasattr(runtime, "to_input_layout"):
        return runtime.to_input_layout(x)
    return x.contiguous(memory_format=torch.channels_last)


def autocast(fast: bool) -> ContextManager[Any]:
    """bf16 autocast on the CPU in fast mode; nothing in fp32 mode."""
    if not fast:
        return contextlib.nullcontext()
    runtime = _runtime()
    if runtime is not None and hasattr(runtime, "autocast"):
        return runtime.autocast(CPU, True)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def infer_step(model: nn.Module, x: torch.Tensor, fast: bool) -> Callable[[], torch.Tensor]:
    """A no-grad forward pass of `model` (already prepared) on `x`, as a zero-argument call."""
    model.eval()
    x = to_input(x, fast)

    def step() -> torch.Tensor:
        with torch.inference_mode(), autocast(fast):
            return model(x)

    return step


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fast: bool,
               ignore_index: int = 255) -> Callable[[], float]:
    """One optimisation step (forward, cross-entropy, backward, AdamW step) as a call."""
    model.train()
    x = to_input(x, fast)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast(fast):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=ignore_index)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _conv_backward_flops(grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], _bias: Any,
                         _stride: Any, _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any,
                         _groups: int, output_mask: list[bool], out_shape: Any = None, **_: Any) -> int:
    """Convolution backward = one forward's FLOPs per gradient asked for (input, weight).

    torch 2.13's own formula ignores `groups` for the input gradient, counting a depthwise
    conv's backward `groups` times too high (64x for a 64-channel depthwise conv), which would
    inflate the training GFLOP/s of MobileNet-style models.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_gflops(fn: Callable[[], Any]) -> float:
    """GFLOPs of one call, counted by torch.utils.flop_counter (matmuls and convolutions)."""
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def forward_and_backward_gflops(make_model: Callable[[], nn.Module], x: torch.Tensor,
                                y: torch.Tensor) -> tuple[float, float]:
    """(forward, forward + backward) GFLOPs of a fresh fp32 model on a batch like (x, y).

    Counted on the meta device (shapes only, no arithmetic), so counting a 400-GFLOP U-Net
    costs nothing; falls back to real tensors if some op has no meta kernel.
    """
    def count(device: torch.device) -> tuple[float, float]:
        with torch.device(device):
            model = make_model()
        xd, yd = x.to(device), y.to(device)
        model.eval()
        with torch.no_grad():
            fwd = count_gflops(lambda: model(xd))
        model.train()
        total = count_gflops(lambda: F.cross_entropy(model(xd), yd, ignore_index=255).backward())
        return fwd, total

    try:
        return count(torch.device("meta"))
    except (NotImplementedError, RuntimeError):
        return count(CPU)
