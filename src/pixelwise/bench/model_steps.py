"""Inference and training steps of a model in fp32 NCHW or in the default fast mode,
through the product's own code paths.

Both modes come from the one resolver (`pixelwise.runtime.resolve_runtime`): fp32 is
`precision=fp32, channels_last=off`, fast is what `precision=auto` picks on this CPU (bf16 +
channels_last where bf16 is a measured speed-up). An inference step is the Predictor's model
call (`torch_model_fn`), a training step is `training.loop.train_one_epoch` over one batch
with the cross-entropy of `pixelwise.losses`: what `pixelwise predict` and `pixelwise train` run.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from pixelwise.runtime import Runtime, resolve_runtime

CPU = torch.device("cpu")


def runtime_for(fast: bool) -> Runtime:
    """The fast mode (precision auto) or plain fp32 NCHW on the CPU, from the product's resolver."""
    return resolve_runtime(CPU, "auto") if fast else resolve_runtime(CPU, "fp32", "off")


def fast_mode_source() -> str:
    """What the fast mode resolved to here, for the notes under each table."""
    return f"pixelwise.runtime.resolve_runtime(precision='auto'): {runtime_for(True).describe()}"


def prepare(model: nn.Module, fast: bool) -> nn.Module:
    """The model as that mode runs it (channels_last in the fast mode where it applies)."""
    return runtime_for(fast).prepare(model)


def infer_step(model: nn.Module, x: torch.Tensor, fast: bool) -> Callable[[], torch.Tensor]:
    """The Predictor's forward pass of `model` (already prepared) on `x`, as a zero-argument call."""
    from pixelwise.inference.predictor import torch_model_fn

    run = torch_model_fn(model, runtime_for(fast))
    return lambda: run(x)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fast: bool,
               ignore_index: int = 255) -> Callable[[], float]:
    """One optimisation step of the training loop (forward, cross-entropy, backward, AdamW
    step) on the batch (x, y), as a call returning the loss."""
    from pixelwise.losses import build_loss
    from pixelwise.tasks import Task
    from pixelwise.training.loop import train_one_epoch

    runtime = runtime_for(fast)
    task = Task("multiclass", num_classes=_out_channels(model, x), ignore_index=ignore_index)
    loss_fn = build_loss("ce", task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = [(x, y)]

    def step() -> float:
        return train_one_epoch(model, batch, loss_fn, optimizer, None, device=runtime.device, runtime=runtime).loss

    return step


def _out_channels(model: nn.Module, x: torch.Tensor) -> int:
    """Classes the model predicts: its `num_classes` attribute, else one small forward pass."""
    classes = getattr(model, "num_classes", None)
    if isinstance(classes, int):
        return classes
    was_training = model.training
    with torch.no_grad():
        channels = int(model.eval()(x[:1, :, :64, :64]).shape[1])
    model.train(was_training)
    return channels


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
