"""Checkpoints that would run code on load are refused, and the code never runs.

The payload is a pickle whose `__reduce__` calls `open(marker, "w")`: loading it with plain
pickle creates the marker file. A safe loader (torch.load(weights_only=True)) must refuse it
with a clear CheckpointError naming the file, and the marker must not exist afterwards.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_bad_inputs import assert_clear_failure, command_exists, run_pixelwise  # noqa: E402

from pixelwise.errors import CheckpointError  # noqa: E402
from pixelwise.checkpoint import FORMAT, load_checkpoint, save_checkpoint  # noqa: E402


class _CreatesMarker:
    """Unpickling this object calls open(marker, "w"), i.e. creates a file: code execution."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A file that looks like a pixelwise checkpoint but carries the payload in `model`."""
    payload = {
        "format": FORMAT,
        "model": _CreatesMarker(marker),
        "task": {"kind": "multiclass", "num_classes": 2},
        "state_dict": {},
    }
    if legacy:
        with open(path, "wb") as handle:  # the pre-zip torch format: a bare pickle stream
            pickle.dump(payload, handle, protocol=2)
    else:
        torch.save(payload, path)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "raw-pickle"])
def test_payload_really_runs_code_when_loaded_unsafely(tmp_path, legacy):
    # Proves the payload is live, so the refusal tests below mean something.
    marker = tmp_path / "pwned_unsafe"
    path = _evil_checkpoint(tmp_path / "evil.pt", marker, legacy)
    if legacy:
        with open(path, "rb") as handle:
            pickle.load(handle)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "raw-pickle"])
def test_load_checkpoint_refuses_code_and_never_runs_it(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = _evil_checkpoint(tmp_path / "evil.pt", marker, legacy)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "evil.pt" in str(info.value)
    assert "refused" in str(info.value) or "unsafe" in str(info.value)
    assert not marker.exists()


def test_safe_checkpoint_loads_with_plain_weights_only(tmp_path):
    # The positive side: what save_checkpoint writes is loadable by torch itself, safely.
    conv = torch.nn.Conv2d(3, 2, 3)
    path = save_checkpoint(
        tmp_path / "ok.pt",
        {"model": {"name": "tiny", "kwargs": {}}, "task": {"kind": "multiclass", "num_classes": 2},
         "state_dict": conv.state_dict(), "epoch": 3},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["epoch"] == 3
    assert torch.equal(raw["state_dict"]["weight"], conv.weight.detach())
    assert load_checkpoint(path)["epoch"] == 3


@pytest.mark.parametrize(
    "content, problem",
    [(b"", "empty"), (b"not a checkpoint\n", "text"), (None, "truncated")],
)
def test_corrupt_checkpoints_raise_checkpoint_error(tmp_path, content, problem):
    path = tmp_path / f"{problem}.pt"
    if content is None:
        good = save_checkpoint(tmp_path / "good.pt", {"model": {}, "task": {}, "state_dict": {"w": torch.ones(1000)}})
        content = good.read_bytes()[:-200]
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert path.name in str(info.value)


def test_plain_tensor_file_is_not_a_pixelwise_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a pixelwise checkpoint"):
        load_checkpoint(path)


def _cli_commands(evil: Path, tmp_path: Path) -> dict[str, list]:
    image = Path(__file__).parent / "data" / "bad_inputs" / "rgba.png"
    return {
        "predict": ["predict", evil, image, "--out", tmp_path / "pred"],
        "evaluate": ["evaluate", evil, "--data", "synthetic:shapes?n=2&size=32", "--split", "val"],
        "export": ["export", evil, "--out", tmp_path / "model.onnx"],
    }


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_cli_refuses_evil_checkpoint(tmp_path, command):
    if not command_exists(command):
        pytest.skip(f"`pixelwise {command}` not written yet")
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    result = run_pixelwise(*_cli_commands(evil, tmp_path)[command], timeout=120)
    assert_clear_failure(result, "evil.pt")
    assert not marker.exists()


def test_serve_refuses_evil_checkpoint_at_start(tmp_path):
    # serve loads the checkpoint before binding the port, so it must exit with a clear error.
    if not command_exists("serve"):
        pytest.skip("`pixelwise serve` not written yet")
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    result = run_pixelwise("serve", evil, "--port", "0", timeout=60)
    assert_clear_failure(result, "evil.pt")
    assert not marker.exists()


# --------------------------------------------------------------------------- safetensors
def _tiny_checkpoint() -> dict:
    from pixelwise.models import create_model

    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "in_channels": 3, "base_channels": 4, "depth": 2}
    return {
        "model": {"name": "unet", "kwargs": kwargs},
        "task": {"kind": "multiclass", "num_classes": 3, "ignore_index": 255, "threshold": 0.5},
        "classes": {"names": ["a", "b", "c"], "colors": [[0, 0, 0], [255, 0, 0], [0, 0, 255]], "ignore_index": 255},
        "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3, "in_channels": 3, "crop_size": None},
        "state_dict": create_model("unet", **kwargs).state_dict(),
    }


def test_safetensors_round_trip_rebuilds_the_same_model(tmp_path):
    from pixelwise.checkpoint import build_model, load_safetensors, save_safetensors

    ckpt = _tiny_checkpoint()
    path = save_safetensors(tmp_path / "model.safetensors", ckpt)
    loaded = load_safetensors(path)
    assert loaded["task"] == ckpt["task"] and loaded["model"] == ckpt["model"]
    x = torch.randn(1, 3, 16, 16)
    original = build_model({**ckpt, "state_dict": ckpt["state_dict"]})
    with torch.no_grad():
        torch.testing.assert_close(build_model(loaded)(x), original(x))


@pytest.mark.parametrize("problem", [
    "truncated",
    "bad-metadata",
    "no-metadata",
])
def test_broken_safetensors_raise_checkpoint_error(tmp_path, problem):
    from safetensors.torch import save_file

    from pixelwise.checkpoint import load_safetensors, save_safetensors

    path = tmp_path / f"{problem}.safetensors"
    if problem == "truncated":
        good = save_safetensors(tmp_path / "good.safetensors", _tiny_checkpoint())
        path.write_bytes(good.read_bytes()[:-100])
    elif problem == "bad-metadata":
        save_file({"w": torch.ones(2)}, str(path), metadata={"pixelwise": "{not json"})
    else:
        save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(CheckpointError) as info:
        load_safetensors(path)
    assert path.name in str(info.value)


def test_predict_cli_accepts_model_safetensors(tmp_path):
    # The run folder's deployable weights (model.safetensors) work wherever a checkpoint does.
    if not command_exists("predict"):
        pytest.skip("`pixelwise predict` not written yet")
    from pixelwise.checkpoint import save_safetensors

    model = save_safetensors(tmp_path / "model.safetensors", _tiny_checkpoint())
    image = Path(__file__).parent / "data" / "bad_inputs" / "cmyk.jpg"
    result = run_pixelwise("predict", model, image, "--out", tmp_path / "out", "--device", "cpu", "--no-progress",
                           timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "labels" / "cmyk.png").is_file()
