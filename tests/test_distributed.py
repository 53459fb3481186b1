"""DDP through a real torchrun (gloo on this CPU): two processes train a tiny recipe, only
rank 0 writes, and the distributed evaluation equals a single-process one exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

RECIPE = {
    "data": {"root": "synthetic:shapes?n=16&n_val=5&n_test=5&size=32", "crop_size": 32, "batch_size": 4,
             "val_batch_size": 1, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    "model": {"name": "unet", "kwargs": {"base_channels": 4, "depth": 2}},
    "optim": {"lr": 0.01},
    "train": {"epochs": 2, "amp": "off", "channels_last": False},
}


def _env() -> dict[str, str]:
    # One thread per process in both runs, so the floating-point reductions are the same.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
@pytest.mark.timeout(900)  # its subprocess alone may take up to 600 s
def test_torchrun_two_processes_train_and_evaluate_like_one(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pixelwise",
         "train", "--config", str(recipe), "--out", str(run)],
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x2" in proc.stderr  # the run announced two processes
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # rank 1 wrote nothing
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "model.safetensors").is_file()
    distributed = json.loads((run / "eval" / "metrics.json").read_text())
    assert distributed["num_images"] == 5  # no sample padded in or duplicated by the sharding

    single = subprocess.run([sys.executable, "-m", "pixelwise", "evaluate", str(run), "--split", "test", "--json",
                             "--amp", "off", "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert single.returncode == 0, single.stderr
    one = json.loads(single.stdout)
    assert one["confusion_matrix"] == distributed["confusion_matrix"]
    assert [r["name"] for r in one["per_image"]] == [r["name"] for r in distributed["per_image"]]
    assert one["miou"] == pytest.approx(distributed["miou"])
