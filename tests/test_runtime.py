"""The CPU/GPU fast path: precision choice, autocast, channels_last, and that bf16 keeps accuracy."""

from __future__ import annotations

import pytest
import torch

from pixelwise import runtime
from pixelwise.errors import ConfigError
from pixelwise.models import create_model


def test_precision_choices():
    assert runtime.PRECISIONS == ("auto", "fp32", "bf16", "fp16")
    assert runtime.resolve_precision("fp32", "cpu") == "fp32"
    assert runtime.resolve_precision("bf16", "cpu") == "bf16"
    auto = runtime.resolve_precision("auto", "cpu")
    assert auto == ("bf16" if runtime.fast_mode_supported("cpu") else "fp32")
    with pytest.raises(ConfigError, match="unknown precision 'fp8'.*auto"):
        runtime.resolve_precision("fp8", "cpu")


def test_resolve_runtime_one_vocabulary_and_one_channels_last_rule(monkeypatch):
    monkeypatch.setattr(runtime, "measured_cpu_bf16_speedup", lambda: 3.0)  # a CPU where bf16 pays
    fast = runtime.resolve_runtime("cpu", "auto", "auto")
    assert fast == runtime.Runtime(torch.device("cpu"), "bf16", True) and fast.dtype == torch.bfloat16
    monkeypatch.setattr(runtime, "measured_cpu_bf16_speedup", lambda: 0.9)  # one where it does not
    assert runtime.resolve_runtime("cpu", "auto", "auto") == runtime.Runtime(torch.device("cpu"), "fp32", False)
    # channels_last auto follows the precision; on/off force it either way.
    assert runtime.resolve_runtime("cpu", "bf16", "auto").channels_last
    assert not runtime.resolve_runtime("cpu", "bf16", "off").channels_last
    assert runtime.resolve_runtime("cpu", "fp32", "on").channels_last
    assert runtime.resolve_runtime("cpu", "fp32").dtype is None


def test_old_spellings_are_read_with_a_one_line_note(capsys):
    runtime._noted.clear()
    assert runtime.normalize_precision("off") == "fp32"
    assert runtime.normalize_precision(False) == "fp32"        # YAML 1.1's reading of a bare `off`
    assert runtime.normalize_precision("bfloat16") == "bf16"
    assert runtime.normalize_channels_last(True) == "on" and runtime.normalize_channels_last("false") == "off"
    notes = capsys.readouterr().err.splitlines()
    assert notes[0] == "note: precision=off is an old spelling, read as precision=fp32; write precision=fp32"
    assert len(notes) == 3  # off (once, though read twice), bfloat16, false; a bool is not an old word
    with pytest.raises(ConfigError, match="channels_last: unknown value 'sideways'"):
        runtime.normalize_channels_last("sideways")


def test_resolve_runtime_refuses_what_the_device_cannot_do():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        runtime.resolve_runtime("cpu", "fp16")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        runtime.resolve_runtime("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            runtime.resolve_runtime("cuda")


def test_runtime_runs_a_model_as_resolved():
    rt = runtime.resolve_runtime("cpu", "bf16", "on")
    model = rt.prepare(create_model("unet", num_classes=2, base_channels=4, depth=2))
    assert model.inc[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = rt.to_device(torch.randn(1, 3, 16, 16))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with rt.autocast():
        assert model(x).dtype == torch.bfloat16
    assert rt.describe() == "bf16 autocast + channels_last on cpu"


def test_fast_mode_needs_bf16_instructions(monkeypatch):
    runtime.measured_cpu_bf16_speedup.cache_clear()
    monkeypatch.setattr(runtime, "cpu_has_bf16_instructions", lambda: False)
    try:
        assert runtime.measured_cpu_bf16_speedup() == 0.0
        assert not runtime.fast_mode_supported("cpu")
        assert runtime.resolve_precision("auto", "cpu") == "fp32"
    finally:
        runtime.measured_cpu_bf16_speedup.cache_clear()


def test_fast_mode_follows_the_measurement(monkeypatch):
    monkeypatch.setattr(runtime, "measured_cpu_bf16_speedup", lambda: 3.0)
    assert runtime.fast_mode_supported("cpu")
    monkeypatch.setattr(runtime, "measured_cpu_bf16_speedup", lambda: 0.9)
    assert not runtime.fast_mode_supported("cpu")


def test_autocast_switches_conv_dtype():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with runtime.autocast("cpu", precision="bf16"):
        assert conv(x).dtype == torch.bfloat16
    with runtime.autocast("cpu", enabled=False, precision="bf16"):
        assert conv(x).dtype == torch.float32
    with runtime.autocast("cpu", precision="fp32"):
        assert conv(x).dtype == torch.float32


def test_prepare_for_speed_and_input_layout():
    model = runtime.prepare_for_speed(create_model("unet", num_classes=2, base_channels=4, depth=2), "cpu")
    assert model.inc[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = runtime.to_input_layout(torch.randn(2, 3, 16, 16))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    flat = torch.randn(3, 4)
    assert runtime.to_input_layout(flat) is flat
    y = model(x)
    assert y.shape == (2, 2, 16, 16)


@pytest.mark.parametrize("name, kwargs", [("unet", {"base_channels": 16, "depth": 4}),
                                          ("segformer", {})])  # attention and LayerNorm too
def test_bf16_channels_last_agrees_with_fp32(name, kwargs):
    # Training and prediction run in this fast mode on CPUs with bf16 (autocast keeps softmax
    # and layer_norm in fp32).
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, **kwargs)
    with torch.no_grad():  # a few train-mode passes give BatchNorm non-trivial running statistics
        for _ in range(2):
            model(torch.randn(2, 3, 64, 64))
    model.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        reference = model(x)
        fast_model = runtime.prepare_for_speed(model, "cpu")
        with runtime.autocast("cpu", precision="bf16"):
            fast = fast_model(runtime.to_input_layout(x))
    assert fast.dtype == torch.bfloat16  # really ran in reduced precision
    fast = fast.float()
    relative_error = ((fast - reference).norm() / reference.norm()).item()
    agreement = (fast.argmax(1) == reference.argmax(1)).float().mean().item()
    assert relative_error < 0.02, relative_error
    assert agreement > 0.99, agreement
