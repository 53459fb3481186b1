"""`pixelwise quickstart` end to end (shrunk by overrides to stay CPU-cheap): every promised
file lands in the run folder and the printout says where."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def run_quickstart(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixelwise", "quickstart", "--out", str(out), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(900)  # its subprocess alone may take up to 600 s
def test_quickstart_multiclass_writes_the_whole_run(tmp_path):
    out = tmp_path / "qs"
    proc = run_quickstart(out, "--task", "multiclass", "data.root=synthetic:shapes?n=16&n_val=4&n_test=6&size=48",
                          "data.crop_size=48", "train.epochs=1", "train.amp=off", "train.channels_last=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("checkpoints/best.pt", "model.safetensors", "metrics.csv", "eval/metrics.json",
                 "eval/confusion_matrix.csv", "eval/per_image.csv", "config.yaml", "report.html"):
        assert (out / name).is_file(), name
    predictions = sorted((out / "predictions").glob("*.png"))
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(predictions) == len(overlays) == 6
    labels = np.asarray(Image.open(predictions[0]))
    assert labels.shape == (48, 48) and labels.max() < 5  # class ids, palette PNG
    assert np.asarray(Image.open(overlays[0]).convert("RGB")).shape == (48, 48, 3)
    result = json.loads((out / "eval" / "metrics.json").read_text())
    assert result["split"] == "test" and result["num_images"] == 6
    # The printout names the run folder and the per-class table.
    assert str(out) in proc.stderr and "test mIoU" in proc.stderr and "circle" in proc.stderr
    # The planner says up front how long it will take here, before the first epoch.
    announce = proc.stderr.find("minutes on this machine")
    assert 0 <= announce < proc.stderr.find("epoch 1/")
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["train"]["epochs"] == 1 and recorded["plan"]["reasons"]["train.epochs"] == "given"


@pytest.mark.slow
@pytest.mark.timeout(900)  # its subprocess alone may take up to 600 s
def test_quickstart_multilabel_on_wafer(tmp_path):
    out = tmp_path / "qs"
    proc = run_quickstart(out, "--task", "multilabel", "data.root=synthetic:wafer?n=16&n_val=4&n_test=4&size=32",
                          "train.epochs=1", "train.amp=off", "train.channels_last=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "eval" / "metrics.json").read_text())
    assert result["task"] == "multilabel"
    assert np.asarray(result["confusion_matrix"]).shape == (8, 2, 2)  # one 2x2 per defect pattern
    assert "Donut" in result["per_class"]
    assert len(list((out / "predictions").glob("*.png"))) == 4
    assert (out / "eval" / "confusion_matrix.csv").read_text().startswith("class,tn,fp,fn,tp")


def test_quickstart_rejects_bad_override_before_work(tmp_path):
    proc = run_quickstart(tmp_path / "qs", "train.epochs=0")
    assert proc.returncode == 2 and "train.epochs" in proc.stderr
    assert not (tmp_path / "qs").exists()
