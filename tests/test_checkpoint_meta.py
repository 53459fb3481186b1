"""CheckpointMeta and load_model: the one typed reader of the checkpoint format."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pixelwise.checkpoint import (
    FORMAT,
    CheckpointMeta,
    load_model,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
    save_safetensors,
)
from pixelwise.errors import CheckpointError
from pixelwise.models import create_model
from pixelwise.tasks import Task

MODEL = {"name": "unet", "kwargs": {"num_classes": 3, "in_channels": 1, "base_channels": 4, "depth": 2}}


def checkpoint(model: torch.nn.Module | None = None, **entries) -> dict:
    model = model or create_model(MODEL["name"], **MODEL["kwargs"])
    return {"model": MODEL, "task": {"kind": "multiclass", "num_classes": 3, "ignore_index": 255, "threshold": 0.5},
            "classes": {"names": ["sky", "road", "car"], "colors": [[0, 0, 255], [128, 64, 128], [255, 0, 0]],
                        "ignore_index": 255},
            "preprocess": {"mean": [0.5], "std": [0.25], "in_channels": 1, "crop_size": 64},
            "epoch": 7, "config": {"data": {"root": "synthetic:shapes"}, "train": {"epochs": 9}},
            "state_dict": model.state_dict(), **entries}


def test_from_dict_reads_every_entry_and_round_trips():
    meta = CheckpointMeta.from_dict(checkpoint())
    assert meta.model_name == "unet" and dict(meta.model_kwargs) == MODEL["kwargs"]
    assert meta.task == Task("multiclass", 3)
    assert meta.class_names == ("sky", "road", "car")
    assert meta.class_colors == ((0, 0, 255), (128, 64, 128), (255, 0, 0))
    assert (meta.mean, meta.std, meta.in_channels, meta.crop_size) == ((0.5,), (0.25,), 1, 64)
    assert (meta.epoch, meta.data_root, meta.ignore_index, meta.format) == (7, "synthetic:shapes", 255, FORMAT)
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.model_name = "fcn"  # type: ignore[misc]


def test_an_old_minimal_checkpoint_still_reads_with_defaults():
    # What the first checkpoints held: no classes, no preprocess, no config.
    meta = CheckpointMeta.from_dict({"format": FORMAT, "model": {"name": "unet", "kwargs": {"in_channels": 4}},
                                     "task": {"kind": "binary", "num_classes": 2}, "state_dict": {}})
    assert (meta.class_names, meta.class_colors, meta.mean, meta.std) == ((), (), None, None)
    assert (meta.in_channels, meta.crop_size, meta.epoch, meta.data_root) == (4, None, None, None)


@pytest.mark.parametrize("change, entry", [
    ({"format": "pixelwise-checkpoint/0"}, "'format'"),
    ({"model": "unet"}, "'model'"),
    ({"model": {"kwargs": {}}}, "'model'"),
    ({"model": {"name": "unet", "kwargs": [1, 2]}}, "'model.kwargs'"),
    ({"task": None}, "'task'"),
    ({"task": {"kind": "multiclass", "num_classes": 3, "colour": 1}}, "'task'"),
    ({"classes": ["sky"]}, "'classes'"),
    ({"classes": {"names": "sky"}}, "'classes.names'"),
    ({"classes": {"names": ["a"], "colors": [[1, 2]]}}, "'classes.colors'"),
    ({"classes": {"names": ["a"], "colors": "red"}}, "'classes.colors'"),
    ({"preprocess": {"mean": ["x"], "in_channels": 1}}, "'preprocess'"),
    ({"preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.2], "in_channels": 1}}, "'preprocess.mean'"),
])
def test_malformed_entries_raise_checkpoint_error_naming_file_and_entry(change, entry):
    with pytest.raises(CheckpointError) as info:
        CheckpointMeta.from_dict({**checkpoint(), **change}, source="runs/a/best.pt")
    assert str(info.value).startswith("runs/a/best.pt: checkpoint entry " + entry), str(info.value)


def test_load_model_rebuilds_the_same_network_from_pt_safetensors_and_dict(tmp_path):
    torch.manual_seed(0)
    original = create_model(MODEL["name"], **MODEL["kwargs"]).eval()
    ckpt = checkpoint(original)
    pt = save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", ckpt)
    st = save_safetensors(tmp_path / "run" / "model.safetensors", ckpt)
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        expected = original(x)
    for source in (pt, st, ckpt):
        model, meta = load_model(source)
        assert not model.training
        assert meta.class_names == ("sky", "road", "car") and meta.task.num_classes == 3
        with torch.no_grad():
            assert torch.equal(model(x), expected)
    assert read_meta(pt) == CheckpointMeta.from_dict(ckpt)
    assert resolve_checkpoint(tmp_path / "run") == (pt, tmp_path / "run")


def test_load_model_names_the_file_when_weights_do_not_fit(tmp_path):
    other = create_model("unet", num_classes=3, in_channels=1, base_channels=8, depth=2)
    path = save_checkpoint(tmp_path / "c.pt", checkpoint(other))
    with pytest.raises(CheckpointError, match=r"c\.pt: weights do not match model 'unet'"):
        load_model(path)


def test_load_checkpoint_refuses_a_malformed_description_by_name(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", checkpoint(classes={"names": ["a"], "colors": [[1, 2]]}))
    with pytest.raises(CheckpointError, match=r"c\.pt: checkpoint entry 'classes.colors'"):
        load_model(path)
