"""The training recipe: YAML + dotted overrides, strict validation, the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pixelwise.errors import ConfigError
from pixelwise.training.config import Config, apply_overrides, load_config, save_config, validate_config
from pixelwise.workflows.quickstart import QUICKSTART, quickstart_config
from pixelwise.training.schedules import lr_factor
from pixelwise.training.config import ScheduleConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_overrides_set_nested_values_with_yaml_types(tmp_path):
    path = write(tmp_path, {"data": {"root": "synthetic:shapes"}, "train": {"epochs": 5}})
    cfg = load_config(path, ["train.epochs=3", "optim.lr=0.01", "data.crop_size=64", "model.kwargs.depth=2",
                             "optim.name=sgd", "train.grad_clip=1.5"])
    assert cfg.train.epochs == 3
    assert cfg.optim.lr == pytest.approx(0.01)
    assert cfg.optim.name == "sgd"
    assert cfg.data.crop_size == 64
    assert cfg.model.kwargs == {"depth": 2}
    assert cfg.train.grad_clip == 1.5
    # The old key and word (YAML reads a bare `off` as False) still mean fp32.
    assert load_config(path, ["train.amp=off", "data.crop_size=64"]).train.precision == "fp32"
    new = load_config(path, ["train.precision=bf16", "train.channels_last=off", "data.crop_size=64"]).train
    assert (new.precision, new.channels_last) == ("bf16", "off")  # YAML reads bare off as False: still "off"


@pytest.mark.parametrize("override, key", [
    ("train.epoch=3", "train.epoch"),            # typo of epochs
    ("optimizer.lr=0.1", "optimizer"),           # unknown section
    ("data.crop=128", "data.crop"),
])
def test_unknown_keys_are_rejected_by_name(tmp_path, override, key):
    path = write(tmp_path, {"data": {"root": "synthetic:shapes"}})
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert key in str(info.value) and "unknown key" in str(info.value)


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-0.1", "optim.lr"),
    ("optim.lr=abc", "optim.lr"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.crop_size=-4", "data.crop_size"),
    ("schedule.name=step", "schedule.name"),
    ("train.amp=fp8", "train.amp"),
    ("train.precision=fp8", "train.precision"),
    ("train.channels_last=sideways", "train.channels_last"),
    ("optim.momentum=1.5", "optim.momentum"),
])
def test_bad_values_are_rejected_by_key(tmp_path, override, key):
    path = write(tmp_path, {"data": {"root": "synthetic:shapes"}})
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert key in str(info.value)


def test_missing_data_root_and_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="data: required key is missing"):
        validate_config({})
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_rescaled_batches_need_a_crop():
    with pytest.raises(ConfigError, match="data.crop_size is required"):
        validate_config({"data": {"root": "x", "batch_size": 4}})
    ok = validate_config({"data": {"root": "x", "batch_size": 4, "augment": {"scale": [1.0, 1.0]}}})
    assert ok.data.crop_size is None


def test_mean_without_std_is_rejected():
    with pytest.raises(ConfigError, match="data.mean and data.std"):
        validate_config({"data": {"root": "x", "mean": [0.5]}})


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["data.root=synthetic:shapes", "data.crop_size=64", "train.epochs=2"])
    path = save_config(cfg, tmp_path / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == 2


@pytest.mark.parametrize("name", ["quickstart", "quickstart_multilabel", "camvid_unet", "camvid_segnet", "isbi_unet"])
def test_shipped_recipes_validate(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, Config)


def test_quickstart_yaml_matches_builtin_recipe():
    for task, name in (("multiclass", "quickstart"), ("multilabel", "quickstart_multilabel")):
        assert load_config(CONFIGS / f"{name}.yaml") == quickstart_config(task)
    assert set(QUICKSTART) == {"multiclass", "multilabel"}


def test_schedules_warmup_then_decay():
    poly = lr_factor(ScheduleConfig(name="poly", warmup_steps=10, warmup_factor=0.1, power=1.0), 110)
    assert poly(0) == pytest.approx(0.1)
    assert poly(5) == pytest.approx(0.55)          # halfway up the linear ramp
    assert poly(10) == pytest.approx(1.0)
    assert poly(60) == pytest.approx(0.5)          # power 1: linear decay over the 100 remaining steps
    assert poly(110) == pytest.approx(0.0)
    cosine = lr_factor(ScheduleConfig(name="cosine", min_lr_ratio=0.1), 100)
    assert cosine(0) == pytest.approx(1.0)
    assert cosine(50) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine(100) == pytest.approx(0.1)
    const = lr_factor(ScheduleConfig(name="constant"), 100)
    assert const(0) == const(99) == 1.0
