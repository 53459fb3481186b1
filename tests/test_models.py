"""One shared suite over every registered model, plus the registry contract.

Frozen outputs: tests/data/frozen_model_outputs.json holds a few numbers per model
(seeded init, tiny input). After an intended architecture change, regenerate with
    .venv/bin/python tests/test_models.py --update-frozen
and say why in the commit. They only detect a change; two hand-weighted networks with outputs
computed on paper (test_hand_weighted_*) check the numbers themselves.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from pixelwise.errors import ConfigError
from pixelwise.models import create_model, list_models, model_cost, model_info, register_model
from pixelwise.models.layers import UPSAMPLE_MODES, transposed_upsampler

FROZEN_PATH = Path(__file__).parent / "data" / "frozen_model_outputs.json"
MODELS = list_models()
EXPECTED = {"sliding_window", "fullres_cnn", "fcn32s", "fcn16s", "fcn8s", "segnet", "segnet_basic", "unet",
            "unet_resnet", "deeplabv3plus", "lraspp_mobilenetv3", "segformer"}


def small(name: str, num_classes: int = 3, in_channels: int = 3, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {**model_info(name)["small_kwargs"], **extra}
    return create_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)


def frozen_summary(name: str) -> dict:
    model = small(name).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y = model(x).double()
    flat = y.flatten()
    picks = [0, flat.numel() // 3, flat.numel() // 2, flat.numel() - 1]
    return {"shape": list(y.shape), "sum": flat.sum().item(), "abs_mean": flat.abs().mean().item(),
            "values": [flat[i].item() for i in picks]}


def test_every_required_architecture_is_registered():
    assert EXPECTED <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(37, 53), (64, 64)])
def test_output_is_logits_at_input_resolution(name, size):
    model = small(name, num_classes=5, in_channels=1).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, *size))
    assert y.shape == (2, 5, *size)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    # Raw logits, not probabilities: no softmax inside (channel sums would all be 1).
    assert not torch.allclose(y.sum(dim=1), torch.ones(()), atol=1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_single_output_channel_and_many_input_channels(name):
    model = small(name, num_classes=1, in_channels=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 4, 33, 30)).shape == (1, 1, 33, 30)


@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_finite_gradients_for_every_parameter(name):
    model = small(name).train()
    y = model(torch.randn(2, 3, 37, 53))
    torch.nn.functional.cross_entropy(y, torch.randint(0, 3, (2, 37, 53))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has non-finite gradient"


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic(name):
    model = small(name).eval()
    x = torch.randn(1, 3, 40, 24)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_torch_export_matches_eager(name):
    model = small(name).eval()
    x = torch.randn(1, 3, 37, 53)
    exported = torch.export.export(model, (x,), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_rebuilds_from_json_spec_with_same_weights(name):
    model = small(name)
    spec = json.loads(json.dumps({"name": name, "kwargs": {"num_classes": 3, "in_channels": 3,
                                                           **model_info(name)["small_kwargs"]}}))
    rebuilt = create_model(spec["name"], **spec["kwargs"])
    rebuilt.load_state_dict(model.state_dict())  # strict: same keys and shapes
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


@pytest.mark.parametrize("name", MODELS)
def test_frozen_output(name):
    frozen = json.loads(FROZEN_PATH.read_text())
    assert name in frozen, f"no frozen output for {name}: run tests/test_models.py --update-frozen"
    got, want = frozen_summary(name), frozen[name]
    assert got["shape"] == want["shape"]
    for key in ("sum", "abs_mean"):
        assert math.isclose(got[key], want[key], rel_tol=1e-3, abs_tol=1e-4), (key, got[key], want[key])
    for g, w in zip(got["values"], want["values"]):
        assert math.isclose(g, w, rel_tol=1e-3, abs_tol=1e-4), (g, w)


# The frozen outputs above came from the code under test: they detect a change, not an error.
# These two are independent: tiny networks from the project's own layers with weights set by
# hand, whose outputs are worked out on paper. All numbers are small binary fractions, so float32
# computes them exactly and the comparison is torch.equal.

def _centre(*values: float) -> torch.Tensor:
    """A 3x3 kernel per input channel that is zero except at the centre (a 1x1 conv in effect)."""
    kernel = torch.zeros(len(values), 3, 3)
    kernel[:, 1, 1] = torch.tensor(values)
    return kernel


def test_hand_weighted_unet_output_computed_on_paper():
    model = create_model("unet", num_classes=2, in_channels=1, base_channels=1, depth=1, batch_norm=False).eval()
    inc_1 = _centre(1.0)
    inc_1[0, 1, 0] = 0.5  # also half the left neighbour: checks the conv's orientation and zero padding
    weights = {
        "inc.0.0.weight": inc_1[None], "inc.0.0.bias": [0.0],
        "inc.1.0.weight": _centre(2.0)[None], "inc.1.0.bias": [-1.0],
        "down.0.0.0.weight": torch.stack([_centre(1.0), _centre(-1.0)]), "down.0.0.0.bias": [0.0, 13.0],
        "down.0.1.0.weight": torch.stack([_centre(0.5, 1.0), _centre(1.0, -1.0)]), "down.0.1.0.bias": [0.0, -10.0],
        # ConvTranspose2d weight (in=2, out=1, 2, 2); channel 1 is 100 everywhere but must arrive as 0
        "up.0.up.op.weight": torch.tensor([[[[0.25, 0.5], [-0.25, 1.0]]], [[[100.0, 100.0], [100.0, 100.0]]]]),
        "up.0.conv.0.0.weight": _centre(1.0, -1.0)[None], "up.0.conv.0.0.bias": [0.5],
        "up.0.conv.1.0.weight": _centre(2.0)[None], "up.0.conv.1.0.bias": [1.0],
        "head.weight": torch.tensor([[[[-1.0]]], [[[1.0]]]]), "head.bias": [3.0, 0.0],
    }
    state = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in weights.items()}
    model.load_state_dict(state, strict=True)
    x = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    # inc conv 1: x + 0.5 * left neighbour (0 beyond the border) = [[1, -1.5], [3, 5.5]]; ReLU [[1, 0], [3, 5.5]]
    # inc conv 2: 2 * that - 1 = [[1, -1], [5, 10]]; ReLU -> skip = [[1, 0], [5, 10]]
    # 2x2 max-pool -> 10
    # down conv 1: (10, -10 + 13) = (10, 3), ReLU keeps both
    # down conv 2: (0.5*10 + 3, 10 - 3 - 10) = (8, -3); ReLU -> (8, 0)
    # transposed conv: 8 * [[0.25, 0.5], [-0.25, 1]] + 0 * 100 = [[2, 4], [-2, 8]]
    # concatenate [upsampled, skip]; up conv 1: up - skip + 0.5 = [[1.5, 4.5], [-6.5, -1.5]]; ReLU [[1.5, 4.5], [0, 0]]
    # up conv 2: 2 * that + 1 = [[4, 10], [1, 1]] (ReLU keeps it)
    # head: class 0 = -f + 3 = [[-1, -7], [2, 2]], class 1 = f = [[4, 10], [1, 1]]  (raw logits, no activation)
    expected = torch.tensor([[[[-1.0, -7.0], [2.0, 2.0]], [[4.0, 10.0], [1.0, 1.0]]]])
    with torch.no_grad():
        got = model(x)
    assert torch.equal(got, expected), got


def test_hand_weighted_conv_bn_relu_in_eval_mode():
    from pixelwise.models.layers import ConvBNReLU

    block = ConvBNReLU(1, 2, kernel_size=1).eval()
    conv, bn = block[0], block[1]
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[2.0]]], [[[-1.0]]]]))
        bn.running_mean.copy_(torch.tensor([1.0, 0.5]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([3.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.5, -1.0]))
    bn.eps = 0.0  # so that sqrt(var + eps) is exactly 2 and 0.5
    x = torch.tensor([[[[0.0, 1.0], [-2.0, 2.5]]]])
    # channel 0: ReLU(3 * (2x - 1) / 2 + 0.5) = ReLU(3x - 1) on (0, 1, -2, 2.5)  -> (0, 2, 0, 6.5)
    # channel 1: ReLU(1 * (-x - 0.5) / 0.5 - 1) = ReLU(-2x - 2)                   -> (0, 0, 2, 0)
    expected = torch.tensor([[[[0.0, 2.0], [0.0, 6.5]], [[0.0, 0.0], [2.0, 0.0]]]])
    with torch.no_grad():
        assert torch.equal(block(x), expected)


def test_unknown_model_lists_available_names():
    with pytest.raises(ConfigError, match="unknown model 'unet3000'.*unet"):
        create_model("unet3000", num_classes=2)


def test_unknown_kwarg_lists_accepted_ones():
    with pytest.raises(ConfigError, match="does not accept 'widht'.*base_channels"):
        create_model("unet", num_classes=2, widht=3)


def test_bad_option_value_is_config_error():
    with pytest.raises(ConfigError, match="upsample"):
        create_model("unet", num_classes=2, upsample="cubic")
    with pytest.raises(ConfigError, match="output_stride"):
        create_model("deeplabv3plus", num_classes=2, output_stride=32)
    with pytest.raises(ConfigError, match="JSON"):
        create_model("unet", num_classes=2, base_channels=8, depth=2, upsample=object())


def test_duplicate_registration_raises():
    with pytest.raises(ConfigError, match="already registered"):
        register_model("unet", "again")(lambda num_classes, in_channels=3: torch.nn.Identity())


@pytest.mark.parametrize("mode", UPSAMPLE_MODES)
def test_unet_every_upsampling_mode(mode):
    model = create_model("unet", num_classes=2, base_channels=4, depth=2, upsample=mode).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 21, 18)).shape == (1, 2, 21, 18)


def test_unet_original_size_and_quickstart_config():
    # The paper's U-Net: 64..1024 channels, ~31.0 M parameters at 2 classes, 1 input channel.
    info = model_info("unet", num_classes=2, in_channels=1, batch_norm=False)
    assert 30.9e6 < info["params"] < 31.1e6
    assert info["output_stride"] == 16
    quick = create_model("unet", num_classes=6, base_channels=16, depth=4)
    assert quick.down[-1][1][0].out_channels == 256  # 16 * 2**4 at the bottom
    with torch.no_grad():
        assert quick.eval()(torch.randn(1, 3, 50, 70)).shape == (1, 6, 50, 70)


def test_fcn_resnet_encoder_and_deeplab_stride_8():
    fcn = create_model("fcn8s", num_classes=4, encoder="resnet18", width=8, fc_channels=16).eval()
    dl = create_model("deeplabv3plus", num_classes=4, encoder="resnet18", width=8, output_stride=8,
                      aspp_channels=8, low_level_channels=4).eval()
    assert dl.encoder.output_stride == 8
    with torch.no_grad():
        assert fcn(torch.randn(1, 3, 40, 41)).shape == (1, 4, 40, 41)
        assert dl(torch.randn(1, 3, 40, 41)).shape == (1, 4, 40, 41)


def test_transposed_upsampler_bilinear_init_interpolates_and_scales_exactly():
    up = transposed_upsampler(2, 2, 8, bilinear_init=True)
    y = up(torch.ones(1, 2, 6, 6))
    assert y.shape == (1, 2, 48, 48)  # exactly 8x
    assert up.kernel_size[0] % up.stride[0] == 0  # no checkerboard: kernel divisible by stride
    # Away from the border a constant image stays constant (bilinear weights sum to 1 per pixel).
    torch.testing.assert_close(y[:, :, 8:-8, 8:-8], torch.ones(1, 2, 32, 32))


def test_sliding_window_really_classifies_each_crop():
    """The dense output equals the patch CNN applied to the crop around each pixel."""
    model = small("sliding_window", chunk_pixels=7).eval()
    x = torch.randn(1, 3, 12, 11)
    with torch.no_grad():
        dense = model(x)
        p = model.cfg.patch_size
        padded = torch.nn.functional.pad(x, [p // 2] * 4, mode="replicate")
        for yy, xx in [(0, 0), (5, 7), (11, 10)]:
            crop = padded[:, :, yy : yy + p, xx : xx + p]
            torch.testing.assert_close(dense[0, :, yy, xx], model.patch(crop)[0], rtol=1e-5, atol=1e-6)


def test_model_cost_counts_conv_flops():
    model = create_model("fullres_cnn", num_classes=2, depth=1, width=4, dilated=False)
    cost = model_cost(model, (1, 3, 10, 10))
    # conv 3->4 3x3 + head 4->2 1x1, 2 FLOPs per MAC, 100 pixels.
    assert cost["gflops"] == pytest.approx(2 * 100 * (3 * 4 * 9 + 4 * 2) / 1e9)
    assert cost["params"] == (3 * 4 * 9 + 4 * 2) + 2 + 2 * 4  # conv (no bias, BN), head bias, BN affine


@pytest.mark.slow
def test_models_cli_lists_every_model_as_json():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "pixelwise", "models", "--json"], capture_output=True, text=True,
                         check=True).stdout
    listed = {row["name"]: row for row in json.loads(out)}
    assert set(listed) == set(MODELS)
    assert listed["unet"]["params"] == model_info("unet")["params"] > 0


if __name__ == "__main__":
    if "--update-frozen" not in sys.argv:
        sys.exit("usage: python tests/test_models.py --update-frozen")
    FROZEN_PATH.write_text(json.dumps({name: frozen_summary(name) for name in MODELS}, indent=1) + "\n")
    print(f"wrote {FROZEN_PATH} ({len(MODELS)} models)")


# ---------------------------------------------------------- input_scale
class _Recorder(torch.nn.Module):
    """Identity network that keeps what it was given."""

    def forward(self, x):
        self.seen = x
        return x


def test_input_scale_half_averages_2x2_blocks_and_answers_at_input_size():
    from pixelwise.models.rescale import InputRescale

    net = _Recorder()
    x = torch.randn(2, 3, 8, 12)
    out = InputRescale(net, 0.5)(x)
    assert torch.allclose(net.seen, torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    assert out.shape == x.shape
    # constant blocks survive the round trip exactly
    blocks = torch.arange(6.0).reshape(1, 1, 2, 3).repeat_interleave(4, 2).repeat_interleave(4, 3)
    inner = InputRescale(_Recorder(), 0.5)
    inner(blocks)
    assert torch.equal(inner.net.seen, blocks[:, :, ::2, ::2])


@pytest.mark.parametrize("size", [(37, 53), (64, 64)])
def test_create_model_input_scale_wraps_any_model(size):
    torch.manual_seed(0)
    model = create_model("unet", num_classes=4, base_channels=8, depth=3, input_scale=0.5).eval()
    x = torch.randn(1, 3, *size)
    assert model(x).shape == (1, 4, *size)
    assert model.output_stride == 16  # 8 at half the resolution
    # the stored spec rebuilds the same network
    again = create_model("unet", num_classes=4, base_channels=8, depth=3, input_scale=0.5).eval()
    again.load_state_dict(model.state_dict())
    assert torch.equal(again(x), model(x))


@pytest.mark.parametrize("bad", [0, 1.5, -0.5, "half", True])
def test_input_scale_out_of_range_is_config_error(bad):
    with pytest.raises(ConfigError, match="input_scale must be a number in \\(0, 1\\]"):
        create_model("unet", num_classes=2, input_scale=bad)
