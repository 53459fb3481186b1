"""A SIGKILL in the middle of a checkpoint save loses nothing, and `--resume` finishes the run
with the result an uninterrupted run gets.

The kill is deterministic: the atomic writer's test hook (`PIXELWISE_FAULT_BEFORE_RENAME`,
see pixelwise/atomic.py) makes the process SIGKILL itself after the temporary file of a
chosen save is complete and fsynced, and before its rename. The tests first prove the kill
landed there (exit by SIGKILL, a complete temp file of the newer save beside the target),
then that the previous checkpoint is intact and loadable, that the temp file does not
shadow it, and that the resumed run continues from the last complete checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_bad_inputs import command_exists, run_pixelwise  # noqa: E402

from pixelwise.atomic import FAULT_ENV  # noqa: E402
from pixelwise.checkpoint import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow

# The child makes N saves, each with tensors filled with the save's number, and prints the
# number after each save returns. It starts from the file's epoch + 1.
SAVER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from pixelwise.checkpoint import save_checkpoint, load_checkpoint
    path, saves = Path(sys.argv[1]), int(sys.argv[2])
    start = load_checkpoint(path)["epoch"] + 1 if path.exists() else 0
    for i in range(start, start + saves):
        save_checkpoint(path, {
            "model": {"name": "tiny", "kwargs": {}},
            "task": {"kind": "multiclass", "num_classes": 2},
            "state_dict": {"a": torch.full((100_000,), float(i)), "b": torch.full((100_000,), float(i))},
            "epoch": i,
        })
        print(i, flush=True)
    """
)


def _temp_files(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


@pytest.mark.timeout(120)
def test_save_checkpoint_killed_between_write_and_rename(tmp_path):
    path = tmp_path / "last.pt"
    env = {FAULT_ENV: "last.pt:2"}  # the second save dies before its rename
    killed = subprocess.run([sys.executable, "-c", SAVER, str(path), "5"], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout.split() == ["0"]  # the first save returned, the second never did
    # The kill landed mid-save: the newer checkpoint is complete in its temp file, not renamed.
    (temp,) = _temp_files(tmp_path, "last.pt")
    assert torch.load(temp, weights_only=True)["epoch"] == 1
    # The previous checkpoint is intact and is what every loader sees.
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 0 and all(torch.all(t == 0.0) for t in ckpt["state_dict"].values())
    assert torch.load(path, weights_only=True)["epoch"] == 0
    # A new process continues from the last complete save (epoch 0 -> saves 1 and 2).
    resumed = subprocess.run([sys.executable, "-c", SAVER, str(path), "2"], capture_output=True, text=True,
                             timeout=60)
    assert resumed.returncode == 0 and resumed.stdout.split() == ["1", "2"], resumed.stderr
    final = load_checkpoint(path)
    assert final["epoch"] == 2 and all(torch.all(t == 2.0) for t in final["state_dict"].values())


EPOCHS = 5
KILLED_SAVE = 3  # the third save of last.pt is killed before its rename
TINY_CONFIG = "data:\n  root: 'synthetic:shapes?n=24&size=32&seed=0'\n"
TINY_TRAIN = [
    "data.batch_size=4",
    "data.crop_size=32",
    "data.test_split=null",
    "data.limit=8",
    "model.name=unet",
    "model.kwargs={base_channels: 4, depth: 2}",
    f"train.epochs={EPOCHS}",
    "train.device=cpu",
]


def _epoch_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


@pytest.mark.timeout(600)
def test_train_killed_mid_save_resumes_to_the_uninterrupted_result(tmp_path):
    if not command_exists("train"):
        pytest.skip("`pixelwise train` not written yet")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    train = ["train", "--config", config, "--out", run_dir, *TINY_TRAIN]

    killed = run_pixelwise(*train, env={FAULT_ENV: f"last.pt:{KILLED_SAVE}"}, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # The kill landed inside the save of the KILLED_SAVE-th last.pt: its temp file is complete.
    (temp,) = _temp_files(checkpoints, "last.pt")
    interrupted = torch.load(temp, weights_only=True)
    last = load_checkpoint(checkpoints / "last.pt")  # intact, loadable, not shadowed by the temp file
    assert interrupted["epoch"] == last["epoch"] + 1
    assert 0 < last["global_step"] < interrupted["global_step"]
    last_epoch = last["epoch"]

    resumed = run_pixelwise(*train, "--resume", timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not _temp_files(checkpoints, "last.pt")  # the resumed run removed the leftover
    final = load_checkpoint(checkpoints / "last.pt")
    assert final["epoch"] > last_epoch and final["global_step"] > last["global_step"]
    load_checkpoint(checkpoints / "best.pt")
    # No epoch lost or logged twice: the epoch the kill interrupted was trained again, once.
    epochs = [row["epoch"] for row in _epoch_rows(run_dir)]
    assert sorted(epochs) == epochs and len(set(epochs)) == len(epochs) == EPOCHS, epochs

    straight_dir = tmp_path / "straight"
    straight = run_pixelwise("train", "--config", config, "--out", straight_dir, *TINY_TRAIN, timeout=240)
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = load_checkpoint(straight_dir / "checkpoints" / "last.pt")
    # Same result as the uninterrupted run: weights, steps, and every epoch's training loss.
    assert final["epoch"] == reference["epoch"] and final["global_step"] == reference["global_step"]
    assert final["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    ours, theirs = _epoch_rows(run_dir), _epoch_rows(straight_dir)
    for a, b in zip(ours, theirs):
        assert a["epoch"] == b["epoch"] and a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
