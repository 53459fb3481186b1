"""The Trainer's pieces on their own: the epoch plan of a time budget, the state a checkpoint
carries, validation cadence, model selection, and a recipe left untouched by training."""

from __future__ import annotations

import json

import pytest
import torch

from pixelwise.training.builders import build_optimizer, build_parts
from pixelwise.checkpoint import load_checkpoint
from pixelwise.training.config import OptimConfig, validate_config
from pixelwise.training.state import TrainState, improved, plan_epochs, validation_due
from pixelwise.training.trainer import Trainer


# ------------------------------------------------------------------ plan_epochs (pure)
@pytest.mark.parametrize("elapsed, costs, done, expected", [
    # 300 s budget; epoch 1 took 100 s (warm-up), epoch 2 took 10 s: 110 s spent, 190 s left
    # at the later pace of 10 s -> 19 more epochs, 21 in all (epoch 1's pace alone: 3).
    (100.0, [100.0], 1, 3),
    (110.0, [100.0, 10.0], 2, 21),
    (111.0, [100.0, 10.0, 1.0], 3, 50),    # 189 more at 1 s would pass the recipe's 50: capped
    (400.0, [200.0, 200.0], 2, 2),         # over budget already: never fewer than the epochs done
    (290.0, [100.0, 95.0, 95.0], 3, 3),    # 10 s left, an epoch costs 95 s: stop at 3
])
def test_plan_epochs_by_hand(elapsed, costs, done, expected):
    assert plan_epochs(budget_seconds=300.0, elapsed_seconds=elapsed, epoch_seconds=costs,
                       epochs_done=done, max_epochs=50) == expected


def test_plan_epochs_needs_a_measurement():
    with pytest.raises(ValueError):
        plan_epochs(budget_seconds=60, elapsed_seconds=0, epoch_seconds=[], epochs_done=0, max_epochs=5)


# ------------------------------------------------------------------ small rules
def test_validation_cadence():
    due = [e + 1 for e in range(7) if validation_due(e, every=3, planned_epochs=7, budgeted=False)]
    assert due == [3, 6, 7]  # every third epoch and the last
    due = [e + 1 for e in range(7) if validation_due(e, every=3, planned_epochs=7, budgeted=True)]
    assert due == [1, 3, 6, 7]  # a budget also needs the first epoch's validation cost


def test_improved_respects_mode_delta_and_nan():
    assert improved(0.5, None, mode="max", min_delta=0.0)
    assert improved(0.6, 0.5, mode="max", min_delta=0.05) and not improved(0.54, 0.5, mode="max", min_delta=0.05)
    assert improved(0.4, 0.5, mode="min", min_delta=0.0) and not improved(0.6, 0.5, mode="min", min_delta=0.0)
    assert not improved(float("nan"), None, mode="max", min_delta=0.0)


# ------------------------------------------------------------------ TrainState <-> checkpoint
def test_train_state_round_trips_through_checkpoint_keys():
    state = TrainState(planned_epochs=7, epoch=4, global_step=123, best_metric=0.61, best_epoch=3, bad_epochs=1,
                       rng={"python": [1, 2, 3]})
    saved = state.to_checkpoint()
    # The keys of pixelwise-checkpoint/1 (plus planned_epochs), so older readers still find theirs.
    assert set(saved) == {"epoch", "global_step", "best_metric", "best_epoch", "bad_epochs", "planned_epochs", "rng"}
    back = TrainState.from_checkpoint(saved, planned_epochs=10)
    assert back == TrainState(planned_epochs=7, epoch=4, global_step=123, best_metric=0.61, best_epoch=3,
                              bad_epochs=1, rng={"python": [1, 2, 3]})
    # Without a time budget the recipe's epochs win (a resumed run may be given more).
    assert TrainState.from_checkpoint(saved, planned_epochs=10, keep_plan=False).planned_epochs == 10


def test_train_state_reads_a_checkpoint_from_before_planned_epochs():
    # Older checkpoints kept a time budget's plan in the recorded config's train.epochs.
    old = {"epoch": 2, "global_step": 6, "best_metric": 0.3, "best_epoch": 2, "rng": None,
           "config": {"train": {"epochs": 5}}}
    state = TrainState.from_checkpoint(old, planned_epochs=50)
    assert (state.epoch, state.global_step, state.planned_epochs, state.bad_epochs) == (2, 6, 5, 0)


# ------------------------------------------------------------------ builders and the recipe
TINY = {
    "data": {"root": "synthetic:shapes?n=8&n_val=2&n_test=2&size=32", "crop_size": 32, "batch_size": 4,
             "val_batch_size": 2, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "test_split": None},
    "model": {"name": "unet", "kwargs": {"base_channels": 4, "depth": 2}},
    "schedule": {"name": "poly"},
    "train": {"epochs": 2, "precision": "fp32", "channels_last": "off", "seed": 1,
              "time_budget_minutes": 60, "early_stopping": {"patience": 5}},
}


def test_build_optimizer_follows_the_recipe():
    model = torch.nn.Conv2d(3, 2, 1)
    sgd = build_optimizer(OptimConfig(name="sgd", lr=0.1, momentum=0.5, weight_decay=0.0), model)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    adamw = build_optimizer(OptimConfig(lr=0.01, betas=(0.8, 0.9)), model)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.9)


def test_fit_leaves_the_config_unchanged_and_takes_built_parts(tmp_path):
    from pixelwise.runtime import resolve_runtime

    cfg = validate_config(json.loads(json.dumps(TINY)))
    before = cfg.model_dump()
    runtime = resolve_runtime("cpu", "fp32", "off")
    parts = build_parts(cfg, runtime, say=lambda line: None)
    assert parts.steps_per_epoch == 2 and parts.model_spec["kwargs"]["num_classes"] == 5
    trainer = Trainer(cfg, tmp_path, parts, runtime=runtime, verbose=False)
    assert trainer.model is parts.model and trainer.optimizer is parts.optimizer
    summary = trainer.fit()
    assert summary["finished"] and summary["epochs_run"] == 2
    assert cfg.model_dump() == before
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 4 and ckpt["planned_epochs"] == 2
    assert ckpt["config"] == cfg.to_dict() and ckpt["config"]["train"]["epochs"] == 2  # the recipe as given


def test_run_json_records_data_relative_to_the_run_folder(tmp_path):
    from pixelwise.training.trainer import path_for_record

    (tmp_path / "data").mkdir()
    assert path_for_record(str(tmp_path / "data"), tmp_path / "runs" / "a") == "../../data"
    assert path_for_record("synthetic:shapes?n=8", tmp_path) == "synthetic:shapes?n=8"
