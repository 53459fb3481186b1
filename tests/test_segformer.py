"""SegFormer against an independent oracle: Hugging Face transformers' SegformerModel.

transformers 4.x keeps the key layout of the released nvidia/mit-b0..b2 files in its
state dict (5.x renames at load time), so its randomly initialised models give the
reference key names and shapes, and, loaded with the same (randomised) weights, the
reference encoder hidden states and decoder logits. The shared model suite
(test_models.py) covers shapes at odd sizes, 1/3/4 channels, gradients and determinism.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixelwise.errors import ConfigError
from pixelwise.models import create_model, model_info
from pixelwise.models.encoders.mit import DropPath

transformers = pytest.importorskip("transformers")
from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerModel  # noqa: E402

# The released configurations (hidden sizes, depths, decoder width); heads, ratios, patch
# sizes and strides are the same for all three and equal to SegformerConfig's defaults.
HF_VARIANTS = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),
}


def hf_config(variant: str, **extra) -> SegformerConfig:
    return SegformerConfig(**HF_VARIANTS[variant], drop_path_rate=0.0, classifier_dropout_prob=0.0, **extra)


def randomised(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor random, so a swapped, skipped or transposed weight cannot go unnoticed.

    (A fresh init has zero biases and unit LayerNorm weights, which would hide such mistakes.)
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            out[key] = value
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=g) * 0.2
    return out


@pytest.mark.parametrize("variant", ["b0", "b1", "b2"])
def test_encoder_keys_and_shapes_are_hugging_face_segformer_model(variant):
    ours = create_model("segformer", num_classes=4, variant=variant).state_dict()
    theirs = SegformerModel(hf_config(variant)).state_dict()
    ours_encoder = {k: tuple(v.shape) for k, v in ours.items() if k.startswith("encoder.")}
    assert ours_encoder == {k: tuple(v.shape) for k, v in theirs.items()}


@pytest.mark.parametrize("variant", ["b0", "b2"])
@pytest.mark.parametrize("in_channels,size", [(3, (67, 45)), (1, (64, 96))])
def test_encoder_hidden_states_match_hugging_face_with_the_same_weights(variant, in_channels, size):
    torch.manual_seed(0)
    hf = SegformerModel(hf_config(variant, num_channels=in_channels)).eval()
    hf.load_state_dict(randomised(hf.state_dict()))
    model = create_model("segformer", num_classes=4, in_channels=in_channels, variant=variant).eval()
    model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in hf.state_dict().items()}, strict=True)
    x = torch.randn(2, in_channels, *size)
    with torch.no_grad():
        want = hf(x, output_hidden_states=True).hidden_states
        got = model.encoder(x)  # no padding here: the encoder itself, at an odd size
    assert len(got) == len(want) == 4
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, i
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_whole_model_matches_hugging_face_semantic_segmentation(variant):
    # Its keys are ours with a `segformer.` prefix; its logits are at stride 4 and we
    # resize them to the input size exactly as our model does (bilinear, no corner alignment).
    hf = SegformerForSemanticSegmentation(hf_config(variant, num_labels=5)).eval()
    hf.load_state_dict(randomised(hf.state_dict(), seed=1))
    model = create_model("segformer", num_classes=5, variant=variant).eval()
    state = {k.removeprefix("segformer."): v for k, v in hf.state_dict().items()}
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 96)  # a multiple of 32: our padding adds nothing
    with torch.no_grad():
        want = F.interpolate(hf(pixel_values=x).logits, size=(64, 96), mode="bilinear", align_corners=False)
        got = model(x)
    # B2 runs 16 blocks with 768-wide decoder sums: float32 reordering reaches ~2e-5 with 2
    # threads; a swapped weight moves the logits by ~1 (see the encoder test).
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_released_file_layout_loads_through_encoder_weights(tmp_path):
    # The nvidia/mit-* files are SegformerForImageClassification: `segformer.encoder.*` and
    # a `classifier.*` the encoder does not use.
    from safetensors.torch import save_file

    hf = SegformerModel(hf_config("b0")).eval()
    state = {f"segformer.{k}": v.contiguous() for k, v in randomised(hf.state_dict(), seed=2).items()}
    state["classifier.weight"], state["classifier.bias"] = torch.randn(1000, 256), torch.randn(1000)
    save_file(state, str(tmp_path / "mit_b0.safetensors"))
    rgb = create_model("segformer", num_classes=3, encoder_weights=str(tmp_path / "mit_b0.safetensors"))
    for key, value in rgb.encoder.state_dict().items():
        assert torch.equal(value, state[f"segformer.encoder.{key}"]), key
    gray = create_model("segformer", num_classes=3, in_channels=1, encoder_weights=str(tmp_path / "mit_b0.safetensors"))
    first = state["segformer.encoder.patch_embeddings.0.proj.weight"]
    torch.testing.assert_close(gray.encoder.patch_embeddings[0].proj.weight, first.mean(dim=1, keepdim=True))


def test_parameter_counts_are_the_papers():
    # Paper, Table 1 (150 ADE20K classes): B0 3.7 M, B1 13.7 M, B2 27.5 M; the B0 encoder alone 3.3 M.
    assert 3.70e6 < model_info("segformer", num_classes=150, variant="b0")["params"] < 3.80e6
    assert 13.6e6 < model_info("segformer", num_classes=150, variant="b1")["params"] < 13.8e6
    assert 27.4e6 < model_info("segformer", num_classes=150, variant="b2")["params"] < 27.6e6
    encoder = create_model("segformer", num_classes=2).encoder
    assert sum(p.numel() for p in encoder.parameters()) == 3_319_392  # = SegformerModel(b0), 3.3 M


def test_stochastic_depth_grows_linearly_and_keeps_the_expected_value():
    model = create_model("segformer", num_classes=2, variant="b2", drop_path_rate=0.3)
    rates = [m.p for m in model.encoder.modules() if isinstance(m, DropPath)]
    assert len(rates) == 16 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert all(b > a for a, b in zip(rates, rates[1:]))
    drop = DropPath(0.5).train()
    y = drop(torch.ones(4000, 3, 2))
    per_sample = y.flatten(1)
    # Whole samples are dropped (all zeros) or kept and scaled by 1/keep (all twos).
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 0.45 < (per_sample[:, 0] == 0).float().mean() < 0.55
    assert torch.equal(drop.eval()(torch.ones(3, 2)), torch.ones(3, 2))


def test_training_mode_applies_stochastic_depth_and_eval_does_not():
    model = create_model("segformer", num_classes=2, drop_path_rate=0.9, dropout=0.0, decoder_channels=16)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kwargs,match", [
    ({"variant": "b7"}, "unknown variant 'b7'; choose from b0, b1, b2"),
    ({"decoder_channels": 0}, "decoder_channels must be a positive integer"),
    ({"drop_path_rate": 1.0}, r"drop_path_rate must be in \[0, 1\)"),
    ({"dropout": None}, r"dropout must be a number in \[0, 1\), got None"),
    ({"variant": ["b0"]}, "variant must be one of b0, b1, b2"),
])
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model("segformer", num_classes=2, **kwargs)
