"""Training and evaluation on tiny synthetic data: exact resume, files of a run, NaN stops,
accumulation, early stopping, evaluation against an independent oracle (scikit-learn)."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.checkpoint import build_model, load_checkpoint, load_safetensors
from pixelwise.training.config import load_config, validate_config
from pixelwise.training.loop import NonFiniteLossError, train_one_epoch
from pixelwise.training.trainer import Trainer, train

TINY = {
    "data": {"root": "synthetic:shapes?n=12&n_val=4&n_test=4&size=32", "crop_size": 32, "batch_size": 4,
             "val_batch_size": 2, "augment": {"scale": [0.8, 1.2]}},
    "model": {"name": "unet", "kwargs": {"base_channels": 4, "depth": 2}},
    "optim": {"lr": 0.01},
    "schedule": {"name": "poly", "warmup_steps": 2},
    "train": {"epochs": 2, "precision": "fp32", "channels_last": "off", "seed": 3},
}


def tiny(**sections) -> "Config":
    raw = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate_config(raw)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train(tiny(), run, verbose=False)
    return run


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(tiny(), tmp_path / "a", verbose=False)
    straight.fit()
    first = Trainer(tiny(), tmp_path / "b", verbose=False)
    first.fit(stop_after_epochs=1)  # as if interrupted after epoch 1
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = Trainer(tiny(), tmp_path / "b", resume=True, verbose=False)
    resumed.fit()
    steps = len(straight.step_losses)
    assert steps == 6 and len(first.step_losses) == 3
    np.testing.assert_allclose(first.step_losses + resumed.step_losses, straight.step_losses, rtol=0, atol=1e-6)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    rows = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_run_folder_holds_every_documented_file(trained_run):
    run = trained_run
    for name in ("config.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "model.safetensors", "metrics.jsonl",
                 "metrics.csv", "run.json", "eval/metrics.json", "eval/confusion_matrix.csv", "eval/per_image.csv"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "lr", "val_miou"} <= set(rows[0])
    assert load_config(run / "config.yaml") == tiny()
    info = json.loads((run / "run.json").read_text())
    assert info["model"]["name"] == "unet" and info["hardware"]["torch"] == torch.__version__


def test_checkpoint_contents_load_with_weights_only(trained_run):
    ckpt = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "task", "classes", "preprocess", "state_dict", "optimizer", "scheduler", "epoch",
                "global_step", "rng", "metrics", "config", "best_metric"):
        assert key in ckpt, key
    assert ckpt["model"] == {"name": "unet", "kwargs": {"num_classes": 5, "in_channels": 3, "base_channels": 4, "depth": 2}}
    assert ckpt["classes"]["names"][0] == "background" and ckpt["task"]["kind"] == "multiclass"
    assert len(ckpt["preprocess"]["mean"]) == 3 and ckpt["preprocess"]["in_channels"] == 3
    assert isinstance(ckpt["rng"]["numpy"]["keys"], list) and ckpt["epoch"] == 2 and ckpt["global_step"] == 6
    assert ckpt["config"]["train"]["seed"] == 3


def test_safetensors_rebuilds_the_best_model(trained_run):
    best = load_checkpoint(trained_run / "checkpoints" / "best.pt")
    deploy = load_safetensors(trained_run / "model.safetensors")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(build_model(best)(x), build_model(deploy)(x))


def test_evaluation_matches_sklearn_oracle(trained_run):
    from sklearn.metrics import confusion_matrix as sk_confusion

    from pixelwise.data import build_transforms, open_dataset

    result = json.loads((trained_run / "eval" / "metrics.json").read_text())
    ckpt = load_checkpoint(trained_run / "checkpoints" / "best.pt")
    model = build_model(ckpt)
    pre = ckpt["preprocess"]
    ds = open_dataset(TINY["data"]["root"], "test", transform=build_transforms(False, None, pre["mean"], pre["std"]))
    preds, targets = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            image, target = ds[i]
            preds.append(model(image[None]).argmax(1)[0].numpy().ravel())
            targets.append(target.numpy().ravel())
    expected = sk_confusion(np.concatenate(targets), np.concatenate(preds), labels=list(range(5)))
    np.testing.assert_array_equal(np.asarray(result["confusion_matrix"]), expected)
    np.testing.assert_array_equal(np.load(trained_run / "eval" / "confusion_matrix.npy"), expected)
    tp = np.diag(expected).astype(float)
    union = expected.sum(0) + expected.sum(1) - tp
    ious = tp[union > 0] / union[union > 0]
    assert result["miou"] == pytest.approx(ious.mean())
    assert result["pixel_accuracy"] == pytest.approx(tp.sum() / expected.sum())
    with (trained_run / "eval" / "confusion_matrix.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == ["background", "circle", "square", "triangle", "star"]
    assert [int(v) for v in rows[1][1:]] == expected[0].tolist()
    per_image = list(csv.DictReader((trained_run / "eval" / "per_image.csv").open()))
    assert len(per_image) == 4 == result["num_images"]
    low, high = result["miou_ci"]
    assert low <= high


def test_evaluate_cli_json_and_out(trained_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pixelwise", "evaluate", str(trained_run), "--split", "val",
                           "--json", "--out", str(tmp_path / "ev")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["split"] == "val" and result["num_images"] == 4
    assert set(result["per_class"]) == {"background", "circle", "square", "triangle", "star"}
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny(), run, verbose=False).fit(stop_after_epochs=1)
    good = load_checkpoint(run / "checkpoints" / "last.pt")
    resumed = Trainer(tiny(), run, resume=True, verbose=False)
    real = resumed.loss_fn
    resumed.loss_fn = lambda logits, target: real(logits, target) * float("nan")
    with pytest.raises(NonFiniteLossError, match="nan.*epoch 2, step 1.*last good checkpoint"):
        resumed.fit()
    kept = load_checkpoint(run / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1
    for key, value in good["state_dict"].items():
        assert torch.equal(kept["state_dict"][key], value)


def test_nan_loss_raises_before_any_update():
    model = nn.Conv2d(3, 2, 1)
    before = [p.detach().clone() for p in model.parameters()]
    loader = [(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError):
        train_one_epoch(model, loader, lambda l, t: l.sum() * float("inf"), opt, None, device=torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_gradient_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    images, target = torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4, 6, 6))
    loss = nn.CrossEntropyLoss()
    results = []
    for batches, accumulate in (([(images, target)], 1), ([(images[:2], target[:2]), (images[2:], target[2:])], 2)):
        torch.manual_seed(1)
        model = nn.Conv2d(3, 3, 3, padding=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        out = train_one_epoch(model, batches, loss, opt, None, device=torch.device("cpu"), accumulate=accumulate,
                              grad_clip=10.0)
        assert out.steps == 1
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_early_stopping_ends_the_run(tmp_path):
    cfg = tiny(train={"epochs": 5, "early_stopping": {"patience": 1, "min_delta": 1.0}})  # nothing can improve by 1
    summary = Trainer(cfg, tmp_path, verbose=False).fit()
    assert summary["epochs_run"] == 2 and summary["best_epoch"] == 1 and summary["finished"]


def test_impossible_crop_is_rejected_before_training(tmp_path):
    with pytest.raises(ConfigError, match="data.crop_size: 64 is larger than every train image"):
        Trainer(tiny(data={"crop_size": 64}), tmp_path / "run", verbose=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_model_keyword_is_a_config_error(tmp_path):
    with pytest.raises(Exception) as info:
        Trainer(tiny(model={"kwargs": {"base_chanels": 4}}), tmp_path, verbose=False)
    assert "base_chanels" in str(info.value)


def test_train_cli_reports_bad_override_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pixelwise", "train", "--config", "configs/quickstart.yaml",
                           "--out", str(tmp_path / "r"), "optim.lr=-1"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "optim.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_time_budget_shortens_the_plan_and_the_schedule(tmp_path):
    cfg = tiny(train={"epochs": 50, "time_budget_minutes": 1e-6})  # smaller than any epoch
    recipe = cfg.model_dump()
    trainer = Trainer(cfg, tmp_path, verbose=False)
    summary = trainer.fit()
    assert summary["epochs_run"] == 1 and summary["finished"] and summary["planned_epochs"] == 1
    assert cfg.model_dump() == recipe  # the plan lives in the state, not in the recipe
    assert load_config(tmp_path / "config.yaml").train.epochs == 50
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["planned_epochs"] == 1
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["planned_epochs"] == 1
    factor = trainer.scheduler.lr_lambdas[0]
    assert factor(3) == pytest.approx(0.0) and factor(2) == pytest.approx(1.0)  # the schedule now ends at step 3


def test_train_command_line_is_recorded_for_reproduction():
    from pixelwise.cli import build_parser
    from pixelwise.commands.train import invocation

    args = build_parser().parse_args(["train", "--config", "configs/camvid_unet.yaml", "--out", "runs/a b",
                                      "--no-test", "train.epochs=3", "data.root=/data/my camvid"])
    line = invocation(args)
    assert line == ("pixelwise train --config configs/camvid_unet.yaml --out 'runs/a b' --no-test "
                    "train.epochs=3 'data.root=/data/my camvid'")
    assert shlex.split(line)[2:] == ["--config", "configs/camvid_unet.yaml", "--out", "runs/a b", "--no-test",
                                     "train.epochs=3", "data.root=/data/my camvid"]


def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path):
    # train.compile wraps the network in torch.compile (inductor, a C++ build on CPU): the
    # losses must match eager training and the checkpoint must load into a plain model.
    pytest.importorskip("torch._inductor")
    # SGD, not AdamW: Adam divides by sqrt(v), so a weight whose gradient is ~0 moves by ~lr on
    # either engine's rounding noise (inductor and eager sum in different orders with 2 threads),
    # which would make the weights differ by far more than the computations do.
    cfg = {"train": {"epochs": 1, "max_steps_per_epoch": 2}, "data": {"test_split": None},
           "optim": {"name": "sgd", "lr": 0.01}}
    eager = Trainer(tiny(**cfg), tmp_path / "eager", verbose=False)
    eager.fit()
    compiled = Trainer(tiny(**(cfg | {"train": {**cfg["train"], "compile": True}})), tmp_path / "compiled",
                       verbose=False)
    compiled.fit()
    assert compiled.step_losses == pytest.approx(eager.step_losses, rel=1e-4, abs=1e-5)
    ckpt = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")
    assert not any(k.startswith("_orig_mod.") for k in ckpt["state_dict"])
    model = build_model(ckpt)
    eager_ckpt = load_checkpoint(tmp_path / "eager" / "checkpoints" / "last.pt")
    for key, value in eager_ckpt["state_dict"].items():
        assert torch.allclose(model.state_dict()[key].float(), value.float(), atol=1e-4), key


def test_resume_removes_temp_files_of_interrupted_saves(tmp_path):
    Trainer(tiny(), tmp_path, verbose=False).fit(stop_after_epochs=1)
    stale = tmp_path / "checkpoints" / ".last.pt.k3j9x2.tmp"
    stale.write_bytes(b"half a checkpoint")  # what a SIGKILL during save_checkpoint leaves
    keep = tmp_path / "checkpoints" / "notes.txt"
    keep.write_text("not ours to delete")
    Trainer(tiny(), tmp_path, resume=True, verbose=False)
    assert not stale.exists() and keep.exists()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
