"""Encoder contract and loading local pretrained weights in torchvision / timm key layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pixelwise.errors import ConfigError
from pixelwise.models import create_model
from pixelwise.models.encoders import create_encoder, list_encoders, timm
from pixelwise.models.pretrained import adapt_first_conv

SMALL = {"vgg16": {"width": 8}, "vgg16_bn": {"width": 8}, "resnet18": {"width": 8}, "resnet34": {"width": 8},
         "resnet50": {"width": 8}, "mobilenetv3_large": {"width_mult": 0.25}}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_features_by_stride_match_the_declared_contract(name):
    enc = create_encoder(name, in_channels=2, **SMALL[name]).eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 2, 64, 96))
    assert len(feats) == len(enc.out_channels) == len(enc.strides) == 5
    assert enc.strides == [2, 4, 8, 16, 32] and enc.output_stride == 32
    for f, ch, s in zip(feats, enc.out_channels, enc.strides):
        assert f.shape == (1, ch, 64 // s, 96 // s)


@pytest.mark.parametrize("output_stride, strides", [(16, [2, 4, 8, 16, 16]), (8, [2, 4, 8, 8, 8])])
def test_resnet_dilation_holds_resolution(output_stride, strides):
    enc = create_encoder("resnet50", output_stride=output_stride, width=8).eval()
    assert enc.strides == strides and enc.output_stride == output_stride
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 64, 64))[-1].shape[-1] == 64 // output_stride
    assert enc.layer4[1].conv2.dilation == (32 // output_stride,) * 2


def test_unknown_encoder_is_config_error():
    with pytest.raises(ConfigError, match="unknown encoder 'resnet101'.*resnet50"):
        create_encoder("resnet101")


@pytest.mark.skipif(timm is not None, reason="timm is installed: the missing-timm message does not apply")
def test_timm_encoder_without_timm_says_so():
    assert not any(n.startswith("timm-") for n in list_encoders())
    with pytest.raises(ConfigError, match="needs the optional package timm"):
        create_encoder("timm-efficientnet_b0")


@pytest.mark.skipif(timm is None, reason="timm is not installed (optional dependency)")
def test_timm_encoder_contract():
    enc = create_encoder("timm-resnet18")
    feats = enc(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == enc.out_channels


# --- torchvision key layouts, written out by hand (names and shapes as torchvision saves them) ---

def torchvision_resnet18_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        state[f"{prefix}.weight"] = torch.rand(c, generator=g)
        state[f"{prefix}.bias"] = torch.randn(c, generator=g)
        state[f"{prefix}.running_mean"] = torch.randn(c, generator=g)
        state[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(7)

    state["conv1.weight"] = torch.randn(64, 3, 7, 7, generator=g)
    bn("bn1", 64)
    cin = 64
    for layer, planes in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            state[f"{p}.conv1.weight"] = torch.randn(planes, cin if block == 0 else planes, 3, 3, generator=g)
            bn(f"{p}.bn1", planes)
            state[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3, generator=g)
            bn(f"{p}.bn2", planes)
            if block == 0 and layer > 1:
                state[f"{p}.downsample.0.weight"] = torch.randn(planes, cin, 1, 1, generator=g)
                bn(f"{p}.downsample.1", planes)
        cin = planes
    state["fc.weight"] = torch.randn(1000, 512, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def torchvision_vgg16_features_state() -> dict[str, torch.Tensor]:
    """torchvision vgg16: convs at features.0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28."""
    g = torch.Generator().manual_seed(1)
    state, cin = {}, 3
    for idx, cout in zip([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
                         [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]):
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.01
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=g)
        cin = cout
    # The classifier (dropped by the encoder); shrunk here, its shapes are never checked.
    state["classifier.6.weight"] = torch.randn(1000, 16, generator=g)
    state["classifier.6.bias"] = torch.randn(1000, generator=g)
    return state


def test_resnet18_torchvision_pth_loads_exactly(tmp_path):
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # DDP-wrapped, nested
    enc = create_encoder("resnet18", weights=str(path))
    loaded = enc.state_dict()
    for key in ("conv1.weight", "layer3.0.downsample.0.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(loaded[key], state[key])
    assert "fc.weight" not in loaded


def test_vgg16_torchvision_safetensors_loads_into_fcn(tmp_path):
    state = torchvision_vgg16_features_state()
    path = tmp_path / "vgg16.safetensors"
    save_file(state, str(path))
    model = create_model("fcn8s", num_classes=2, encoder_weights=str(path), fc_channels=8)
    torch.testing.assert_close(model.encoder.features[28].weight, state["features.28.weight"])
    torch.testing.assert_close(model.encoder.features[0].bias, state["features.0.bias"])


@pytest.mark.parametrize("in_channels", [1, 4])
def test_first_conv_adapts_to_in_channels(tmp_path, in_channels):
    state = torchvision_resnet18_state()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    enc = create_encoder("resnet18", in_channels=in_channels, weights=str(path))
    rgb = state["conv1.weight"]
    got = enc.conv1.weight.detach()
    assert got.shape == (64, in_channels, 7, 7)
    if in_channels == 1:
        torch.testing.assert_close(got[:, 0], rgb.mean(dim=1))
    else:  # R, G, B, R, each scaled by 3/4
        torch.testing.assert_close(got, torch.cat([rgb, rgb[:, :1]], dim=1) * 0.75)
    # Unchanged elsewhere
    torch.testing.assert_close(enc.layer1[0].conv1.weight.detach(), state["layer1.0.conv1.weight"])


def test_adapt_first_conv_keeps_response_to_gray_input():
    # A gray image (same value in R, G, B) through the RGB weight equals 3x the 1-channel mean weight.
    w = torch.randn(5, 3, 3, 3)
    gray = torch.randn(1, 1, 8, 8)
    rgb_out = torch.nn.functional.conv2d(gray.repeat(1, 3, 1, 1), w)
    one_out = torch.nn.functional.conv2d(gray, adapt_first_conv(w, 1))
    torch.testing.assert_close(rgb_out, 3 * one_out)


# --- timm key layouts: timm's real names, order and shapes, recorded from timm itself ---
# tests/data/timm_state_dict_layouts.json was written by tests/data/record_timm_layouts.py from
# timm's own state_dict() (its header names the timm source files and commit), never from
# pixelwise's modules, so the loader is checked against what a timm checkpoint really holds.
TIMM = json.loads((Path(__file__).parent / "data" / "timm_state_dict_layouts.json").read_text())


def timm_state(model: str, seed: int) -> dict[str, torch.Tensor]:
    """A stand-in timm checkpoint: random values in timm's recorded names, order and shapes."""
    g = torch.Generator().manual_seed(seed)
    return {name: torch.tensor(3) if name.endswith("num_batches_tracked") else torch.randn(shape, generator=g)
            for name, shape in TIMM["models"][model]}


def test_timm_mobilenetv3_checkpoint_loads_by_order(tmp_path):
    """timm names MobileNetV3's tensors conv_stem, blocks.i.j.conv_pw/conv_dw/se.conv_reduce...;
    they come in the encoder's order with its shapes, and timm's head (conv_head, classifier)
    follows the last block and is left out."""
    state = timm_state("mobilenetv3_large_100", seed=2)
    assert list(state)[:2] == ["conv_stem.weight", "bn1.weight"] and list(state)[-4:] == [
        "conv_head.weight", "conv_head.bias", "classifier.weight", "classifier.bias"]
    path = tmp_path / "mobilenetv3_large_100.pth"
    torch.save(state, path)
    enc = create_encoder("mobilenetv3_large", weights=str(path))
    loaded = enc.state_dict()
    # The same layer by meaning on both sides (timm name <- pixelwise name), checked by value.
    for ours, theirs in [
        ("features.0.0.weight", "conv_stem.weight"),
        ("features.0.1.running_var", "bn1.running_var"),
        ("features.1.block.0.0.weight", "blocks.0.0.conv_dw.weight"),  # stage 0: depthwise first, no expansion
        ("features.1.block.1.0.weight", "blocks.0.0.conv_pw.weight"),
        ("features.7.block.0.0.weight", "blocks.3.0.conv_pw.weight"),  # inverted residual: expand, dw, project
        ("features.7.block.1.0.weight", "blocks.3.0.conv_dw.weight"),
        ("features.7.block.2.0.weight", "blocks.3.0.conv_pwl.weight"),
        ("features.4.block.2.fc1.bias", "blocks.2.0.se.conv_reduce.bias"),
        ("features.15.block.2.fc2.weight", "blocks.5.2.se.conv_expand.weight"),
        ("features.16.0.weight", "blocks.6.0.conv.weight"),  # the last 1x1 conv to 960 channels
        ("features.16.1.bias", "blocks.6.0.bn1.bias"),
    ]:
        torch.testing.assert_close(loaded[ours], state[theirs], msg=f"{ours} <- {theirs}")
    # Every learned tensor comes from timm's tensor at the same position; the head is not used.
    learned = [k for k in loaded if not k.endswith("num_batches_tracked")]
    theirs = [k for k in state if not k.endswith("num_batches_tracked")]
    assert len(theirs) == len(learned) + 4
    for ours_key, their_key in zip(learned, theirs):
        torch.testing.assert_close(loaded[ours_key], state[their_key], msg=f"{ours_key} <- {their_key}")


def test_timm_mobilenetv3_checkpoint_missing_a_tensor_is_refused(tmp_path):
    """Matching by order must not silently shift every later tensor when one is missing."""
    state = timm_state("mobilenetv3_large_100", seed=3)
    del state["blocks.2.0.se.conv_reduce.bias"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"broken\.pth.*shape"):
        create_encoder("mobilenetv3_large", weights=str(path))


def test_timm_resnet18_checkpoint_loads_by_name_in_any_order(tmp_path):
    """timm's ResNet uses torchvision's names (conv1, layer1.0.bn1, downsample.0, fc): matched by name,
    so even a file whose tensors come in another order loads each one into its own layer."""
    state = timm_state("resnet18", seed=4)
    path = tmp_path / "resnet18_timm.safetensors"
    save_file(dict(reversed(list(state.items()))), str(path))
    enc = create_encoder("resnet18", weights=str(path))
    loaded = enc.state_dict()
    learned = [k for k in state if not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
    assert sorted(learned) == sorted(k for k in loaded if not k.endswith("num_batches_tracked"))
    for key in learned:
        torch.testing.assert_close(loaded[key], state[key], msg=key)


def test_wrong_architecture_weights_name_the_file_and_tensor(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision_resnet18_state(), path)
    with pytest.raises(ConfigError, match=r"r18\.pth.*conv1\.weight.*shape"):
        create_encoder("resnet18", width=32, weights=str(path))
    with pytest.raises(ConfigError, match="missing.pth: encoder weights file not found"):
        create_encoder("resnet18", weights=str(tmp_path / "missing.pth"))
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="garbage.pth: not a readable weights file"):
        create_encoder("resnet18", weights=str(bad))
