"""The planner: the fingerprint on hand-built folders, the pure plan from given fingerprints
and speeds, and the command line's plan/train wiring (no training here: see
tests/test_readme_api.py for a planned run within its budget)."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from PIL import Image

from pixelwise.planning import fixed_keys, plan_config
from pixelwise.planning.fingerprint import Fingerprint, ObjectStats, component_stats, fingerprint
from pixelwise.planning.plan import CANDIDATES, VAL_SHARE, Speed, min_scale, plan

# the module (the package exports a function of the same name)
fpmod = importlib.import_module("pixelwise.planning.fingerprint")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELWISE_HOME", str(tmp_path / "home"))


# ----------------------------------------------------------------------------- fingerprint
def test_component_stats_of_rectangles_and_a_line():
    mask = np.zeros((20, 30), bool)
    mask[2:7, 2:7] = True            # 5x5: area 25, perimeter 20
    mask[12, 5:25] = True            # 1x20 line: area 20, perimeter 42
    mask[0:3, 27:30] = True          # 3x3 in the corner: image borders count as perimeter (12)
    areas, perimeters = component_stats(mask)
    assert sorted(zip(areas.tolist(), perimeters.tolist())) == [(9.0, 12.0), (20.0, 42.0), (25.0, 20.0)]
    assert component_stats(np.zeros((4, 4), bool))[0].size == 0
    assert fpmod.equivalent_width(areas, perimeters).tolist() == [3.0, 5.0, 1.0]  # short sides, in label order


def _write(root, split, name, size, mask):
    w, h = size
    for sub, array in (("images", np.full((h, w, 3), 128, np.uint8)), ("masks", mask)):
        folder = root / sub / split
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"{name}.png")


@pytest.fixture
def hand_built(tmp_path):
    """3 training images (sides 30, 48, 80 px) with known class-1 components and an ignored strip."""
    root = tmp_path / "data"
    a = np.zeros((30, 40), np.uint8)
    a[2:7, 2:7] = 1                   # area 25, 5 px wide
    a[20, 10:30] = 1                  # area 20, 1 px wide: thin
    b = np.zeros((48, 64), np.uint8)
    b[10:20, 10:20] = 1               # area 100
    b[:, 60:64] = 255                 # 192 ignored pixels
    c = np.zeros((80, 100), np.uint8)
    _write(root, "train", "a", (40, 30), a)
    _write(root, "train", "b", (64, 48), b)
    _write(root, "train", "c", (100, 80), c)
    _write(root, "val", "v", (40, 30), a)
    (root / "classes.json").write_text('{"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}, '
                                       '{"id": 1, "name": "cell", "color": [255, 255, 255]}], "ignore_index": 255}')
    return root


def test_fingerprint_of_a_hand_built_folder(hand_built):
    fp = fingerprint(hand_built)
    assert fp.task == "binary" and fp.class_names == ["background", "cell"]
    assert fp.num_images == 3 and fp.channels == 3
    assert fp.image_size == {"min": 30, "median": 48, "max": 80}
    assert fp.image_pixels_median == 64 * 48
    labelled = 1200 + 3072 - 192 + 8000
    assert fp.class_share[1] == pytest.approx(145 / labelled, abs=1e-6)
    assert fp.class_share[0] == pytest.approx(1 - 145 / labelled, abs=1e-6)
    assert fp.ignore_share == pytest.approx(192 / (1200 + 3072 + 8000), abs=1e-6)
    cell = fp.objects["cell"]
    assert cell.count == 3
    assert cell.median_area == 25
    assert cell.p5_area == pytest.approx(np.percentile([20, 25, 100], 5))
    assert cell.thin_share == pytest.approx(1 / 3)       # the 1-px line only
    assert fp.imbalance == pytest.approx(fp.class_share[0] / fp.class_share[1])


def test_fingerprint_is_cached_until_a_file_changes(hand_built, monkeypatch):
    first = fingerprint(hand_built)
    calls = []
    real = fpmod.measure
    monkeypatch.setattr(fpmod, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert fingerprint(hand_built) == first and calls == []
    mask = np.zeros((30, 40), np.uint8)
    mask[0:10, 0:10] = 1
    Image.fromarray(mask).save(hand_built / "masks" / "train" / "a.png")
    changed = fingerprint(hand_built)
    assert calls == [1] and changed.objects["cell"].median_area == 100


def test_fingerprint_of_synthetic_multilabel_and_multiclass_sets():
    wafer = fingerprint("synthetic:wafer?n=6&size=32")
    assert wafer.task == "multilabel" and wafer.num_images == 6 and wafer.image_size["median"] == 32
    assert len(wafer.class_share) == wafer.num_classes and set(wafer.objects) == set(wafer.class_names)
    shapes = fingerprint("synthetic:shapes?n=4&size=40")
    assert shapes.task == "multiclass" and shapes.image_size == {"min": 40, "median": 40, "max": 40}
    assert sum(shapes.class_share) == pytest.approx(1.0, abs=1e-4)


# ----------------------------------------------------------------------------- the pure plan
def make_fp(n=200, side=256, share=0.3, task="binary", p5_area=400.0, thin=0.0) -> Fingerprint:
    names = ["background", "fg"] if task == "binary" else ["background", "a", "b"]
    shares = [1 - share, share] if task == "binary" else [1 - share, share / 2, share / 2]
    objects = {name: ObjectStats(50, p5_area, p5_area * 4, thin) for name in names[1:]}
    return Fingerprint(data="x", split="train", task=task, class_names=names, num_images=n, channels=3,
                       image_size={"min": side, "median": side, "max": side}, image_pixels_median=side * side,
                       class_share=shares, ignore_share=0.0, objects=objects)


def speeds(factor: float) -> dict[str, Speed]:
    """Throughputs at 96 px of a machine `factor` times a 2-core laptop's."""
    base = {"unet_resnet18": (20, 80), "unet32": (12, 50), "unet16": (40, 150), "lraspp_mobilenetv3": (60, 200)}
    return {k: Speed(train * factor, ev * factor, 96) for k, (train, ev) in base.items()}


CANDIDATE_ORDER = [c.key for c in CANDIDATES]


def cost(p) -> tuple[int, int]:
    """(candidate rank, crop): higher rank = smaller model."""
    key = next(c.key for c in CANDIDATES if c.model == p.values["model.name"] and c.kwargs == p.values["model.kwargs"])
    return CANDIDATE_ORDER.index(key), p.values["data.crop_size"]


def test_a_slow_machine_gets_a_smaller_model_or_input():
    fp = make_fp()
    fast, slow = plan(fp, 8, speeds(10.0)), plan(fp, 8, speeds(0.1))
    (fast_rank, fast_crop), (slow_rank, slow_crop) = cost(fast), cost(slow)
    assert fast.values["model.name"] == "unet_resnet" and fast_crop == 256
    assert slow_rank > fast_rank or slow_crop < fast_crop
    assert (slow_rank, -slow_crop) != (fast_rank, -fast_crop)


def test_a_tiny_data_set_gets_stronger_augmentation():
    tiny, large = plan(make_fp(n=15), 8, speeds(1.0)), plan(make_fp(n=3000), 8, speeds(1.0))
    t, big = tiny.values["data.augment"], large.values["data.augment"]
    assert t["rotate"] > big["rotate"] and t["color_jitter"] > big["color_jitter"]
    assert t["scale"][1] - t["scale"][0] > big["scale"][1] - big["scale"][0]
    assert tiny.reasons["data.augment"].startswith("strong") and large.reasons["data.augment"].startswith("light")


def test_a_rare_foreground_gets_a_dice_term():
    assert plan(make_fp(share=0.02), 8, speeds(1.0)).values["train.loss"] == "bce+dice"
    assert plan(make_fp(share=0.4), 8, speeds(1.0)).values["train.loss"] == "bce"
    multiclass = plan(make_fp(task="multiclass", share=0.01), 8, speeds(1.0))
    assert multiclass.values["train.loss"] == "ce+dice"
    assert multiclass.values["data.class_weights"] == "median_frequency"   # 0.99 / 0.005 = 198x


def test_the_epochs_fill_the_budget():
    fp = make_fp(n=300)
    for minutes in (2, 8, 20):
        p = plan(fp, minutes, speeds(1.0), val_images=50)
        epoch_s, train_s = p.estimate["epoch_seconds"], p.train_minutes * 60
        epochs = p.values["train.epochs"]
        assert epochs * epoch_s <= train_s                               # fits
        assert (epochs + 1) * epoch_s > train_s * (1 - VAL_SHARE)       # and one more would not
        validations = math.ceil(epochs / p.values["train.val_every"])
        assert validations * p.estimate["val_seconds"] <= VAL_SHARE * train_s + 1e-6
        assert p.values["train.time_budget_minutes"] == pytest.approx(p.train_minutes)


def test_validation_cadence_follows_time_not_a_fixed_epoch_count():
    fp = make_fp(n=40, side=128)
    short = plan(fp, 2, speeds(1.0), val_images=10)
    long = plan(fp, 30, speeds(1.0), val_images=10)
    assert long.values["train.epochs"] > short.values["train.epochs"]
    assert long.values["train.val_every"] > short.values["train.val_every"]


def test_small_and_thin_objects_limit_downscaling():
    assert min_scale(make_fp(p5_area=64 * 4)) == pytest.approx(0.5)     # sqrt(64/256)
    assert min_scale(make_fp(p5_area=100)) == pytest.approx(0.8)
    assert min_scale(make_fp(thin=0.5)) == 1.0
    thin = plan(make_fp(thin=0.5), 8, speeds(0.05))
    assert thin.values["model.name"] != "lraspp_mobilenetv3"   # its stride-16 head blurs thin structures
    assert thin.values["data.augment"]["scale"][0] == 1.0


def test_given_keys_are_kept():
    fixed = {"model.name": "lraspp_mobilenetv3", "train.loss": "ce", "data.crop_size": 128, "train.epochs": 3}
    p = plan(make_fp(), 8, speeds(1.0), fixed)
    for key, value in fixed.items():
        assert p.values[key] == value and p.reasons[key] == "given"
    assert fixed_keys({"data": {"root": "d", "augment": {"rotate": 0}}, "train": {"epochs": 2}}) == {
        "data.root": "d", "data.augment": {"rotate": 0}, "train.epochs": 2}


def test_every_choice_has_a_reason():
    p = plan(make_fp(), 8, speeds(1.0))
    assert set(p.values) == set(p.reasons) and all(p.reasons.values())
    assert {"model.name", "data.crop_size", "data.batch_size", "train.loss", "data.class_weights", "data.augment",
            "optim.lr", "schedule.name", "train.val_every", "train.epochs"} <= set(p.values)


# ----------------------------------------------------------------------------- wiring
def test_plan_config_records_the_plan_and_never_replans(monkeypatch):
    from pixelwise.planning import probe as probe_mod

    fake = speeds(1.0)
    monkeypatch.setattr(probe_mod, "_measure", lambda cand, *a, **k: fake[cand.key])
    raw = {"train": {"device": "cpu", "precision": "fp32", "loss": "ce"}}
    config, p = plan_config(raw, data="synthetic:shapes?n=12&n_val=4&n_test=4&size=32", minutes=1, say=lambda s: None)
    assert p is not None and config.train.loss == "ce" and config.plan["reasons"]["train.loss"] == "given"
    assert config.model.name == p.values["model.name"] and config.plan["budget_minutes"] == 1
    assert set(config.plan["speeds"]) == set(fake)
    again, none = plan_config(config.to_dict(), say=lambda s: None)   # as read back from config.yaml
    assert none is None and again.to_dict() == config.to_dict()
    monkeypatch.setattr(probe_mod, "_measure", lambda *a, **k: pytest.fail("the probe must come from the cache"))
    _, cached = plan_config(raw, data="synthetic:shapes?n=12&n_val=4&n_test=4&size=32", minutes=1,
                            say=lambda s: None)
    assert cached.values == p.values


def test_plan_command_prints_the_plan_with_reasons_and_throughput(monkeypatch, capsys):
    from pixelwise.cli import main
    from pixelwise.planning import probe as probe_mod

    fake = speeds(1.0)
    monkeypatch.setattr(probe_mod, "_measure", lambda cand, *a, **k: fake[cand.key])
    assert main(["plan", "synthetic:shapes?n=12&n_val=4&n_test=4&size=32", "--minutes", "2",
                 "train.device=cpu", "model.name=unet"]) == 0
    err = capsys.readouterr().err
    assert "throughput on" in err and "unet_resnet18" in err and "train.epochs" in err
    assert "model.name" in err and "# given" in err


def test_train_command_rejects_two_data_words_and_no_data(tmp_path, capsys):
    from pixelwise.cli import main

    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "give DATA" in capsys.readouterr().err
    assert main(["train", "a", "b", "--out", str(tmp_path / "r")]) == 2
    assert "one DATA argument" in capsys.readouterr().err


def test_an_unknown_model_fails_before_measuring(monkeypatch, capsys):
    from pixelwise.cli import main
    from pixelwise.planning import probe as probe_mod

    monkeypatch.setattr(probe_mod, "_measure", lambda *a, **k: pytest.fail("measured before checking the model"))
    assert main(["plan", "synthetic:shapes?n=4&n_val=2&n_test=2&size=32", "model.name=nosuch"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err
