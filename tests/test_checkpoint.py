"""Checkpoints: atomic writes, weights_only loading, RNG state round trip, safetensors export."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.errors import CheckpointError
from pixelwise.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_safetensors,
    restore_rng_state,
    save_checkpoint,
    save_safetensors,
    unwrapped_state_dict,
)


def minimal(state_dict=None) -> dict:
    return {"model": {"name": "unet", "kwargs": {"num_classes": 2}}, "task": {"kind": "multiclass", "num_classes": 2},
            "classes": {"names": ["a", "b"], "colors": [[0, 0, 0], [255, 255, 255]], "ignore_index": 255},
            "preprocess": {"mean": [0.5], "std": [0.25], "in_channels": 1, "crop_size": None},
            "state_dict": state_dict or {"w": torch.arange(6.0).view(2, 3)}}


def test_rng_state_round_trip_replays_every_generator(tmp_path):
    torch.manual_seed(1); np.random.seed(2); random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    path = save_checkpoint(tmp_path / "c.pt", {**minimal(), "rng": state})
    expected = (torch.rand(4), np.random.rand(4), np.random.normal(), [random.random() for _ in range(4)])
    torch.manual_seed(99); np.random.seed(99); random.seed(99)
    # The saved file holds only tensors and plain lists: it loads with weights_only=True.
    restore_rng_state(torch.load(path, weights_only=True)["rng"])
    again = (torch.rand(4), np.random.rand(4), np.random.normal(), [random.random() for _ in range(4)])
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3]


def test_atomic_save_leaves_no_temp_files_and_replaces(tmp_path):
    save_checkpoint(tmp_path / "last.pt", minimal())
    save_checkpoint(tmp_path / "last.pt", minimal({"w": torch.ones(1)}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["state_dict"]["w"], torch.ones(1))


def test_load_refuses_pickled_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "pixelwise-checkpoint/1", "model": Evil(), "task": {}, "state_dict": {}}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "absent.pt")


def test_safetensors_holds_weights_and_metadata(tmp_path):
    shared = nn.Linear(3, 2)
    model = nn.Sequential(shared, shared)  # tied weights: safetensors needs them untied on disk
    ckpt = minimal(unwrapped_state_dict(model))
    path = save_safetensors(tmp_path / "model.safetensors", ckpt)
    back = load_safetensors(path)
    assert back["model"] == ckpt["model"] and back["classes"] == ckpt["classes"]
    assert back["preprocess"]["mean"] == [0.5]
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(back["state_dict"][key], value)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["pixelwise"])["task"]["kind"] == "multiclass"


def test_unwrapped_state_dict_strips_ddp_and_compile_prefixes():
    inner = nn.Linear(2, 2)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = inner

    assert set(unwrapped_state_dict(Wrapper())) == {"weight", "bias"}
