"""SIGKILL at random moments never leaves an unloadable checkpoint, and `--resume` finishes.

Two levels:
- `save_checkpoint` itself: a child process saves a large checkpoint in a loop (so most of
  its time is spent inside the save window) and is killed at seeded random delays; after
  every kill the file must load with `load_checkpoint` (weights_only) and be internally
  consistent (every tensor holds the value of the same save, never a mix).
- `pixelwise train`: a real training subprocess on a tiny synthetic config is killed at
  varied delays, the last checkpoint always loads, and `--resume` completes the run.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_bad_inputs import command_exists, run_pixelwise  # noqa: E402

from pixelwise.checkpoint import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow

# The child writes 2 tensors of 8M float32 (64 MB) per save, each filled with the save's
# number, and prints the number after each save returns. Starts from the file's epoch + 1.
SAVER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from pixelwise.checkpoint import save_checkpoint, load_checkpoint
    path = Path(sys.argv[1])
    start = load_checkpoint(path)["epoch"] + 1 if path.exists() else 0
    for i in range(start, start + 1000):
        value = float(i)
        save_checkpoint(path, {
            "model": {"name": "tiny", "kwargs": {}},
            "task": {"kind": "multiclass", "num_classes": 2},
            "state_dict": {"a": torch.full((4_000_000,), value), "b": torch.full((4_000_000,), value)},
            "epoch": i,
        })
        print(i, flush=True)
    """
)


@pytest.mark.timeout(120)
def test_save_checkpoint_survives_sigkill_during_save(tmp_path):
    path = tmp_path / "last.pt"
    rng = random.Random(1234)
    completed_epochs = []
    for kill in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            first = proc.stdout.readline()  # blocks until one save finished in this child
            assert first.strip().isdigit(), proc.stderr.read()
            # A save takes a good fraction of a second (64 MB + fsync): these delays land inside
            # the save window most of the time, and sometimes between saves.
            time.sleep(rng.uniform(0.0, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ckpt = load_checkpoint(path)
        epoch = ckpt["epoch"]
        for tensor in ckpt["state_dict"].values():
            assert torch.all(tensor == float(epoch)), "a torn checkpoint: tensors from different saves"
        completed_epochs.append(epoch)
    # Each child resumed from the previous file and advanced it: nothing was lost or reset.
    assert completed_epochs == sorted(completed_epochs) and completed_epochs[0] >= 0
    # Temp files of interrupted saves may remain (SIGKILL cannot clean up); they never shadow the file.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    print(f"epochs after each kill: {completed_epochs}; temp files left by mid-save kills: {len(leftovers)}")
    assert all(name.startswith(".last.pt.") and name.endswith(".tmp") for name in leftovers), leftovers


EPOCHS = 5
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


@pytest.mark.timeout(240)
def test_train_killed_at_random_moments_resumes_to_the_end(tmp_path):
    if not command_exists("train"):
        pytest.skip("`pixelwise train` not written yet")
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    rng = random.Random(7)
    budget_end = time.monotonic() + 60  # total time spent killing is bounded
    kills = 0
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    args = [sys.executable, "-m", "pixelwise", "train", "--config", str(config), "--out", str(run_dir), *TINY_TRAIN]
    while time.monotonic() < budget_end and kills < 4:
        resume = ["--resume"] if last.exists() else []
        proc = subprocess.Popen(args + resume, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Wait until this child has written (or re-written) a checkpoint, then kill it soon after.
        before = last.stat().st_mtime_ns if last.exists() else 0
        while proc.poll() is None and time.monotonic() < budget_end:
            if last.exists() and last.stat().st_mtime_ns != before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()[-3000:]
            break  # it finished before we killed it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        print(f"kill {kills}: last.pt epoch {load_checkpoint(last)['epoch'] if last.exists() else None}")
        if last.exists():
            ckpt = load_checkpoint(last)
            assert ckpt["epoch"] >= 0
            torch.load(last, weights_only=True)  # the plain torch call agrees
    assert kills >= 1, "never managed to kill the run: make the config longer"
    result = run_pixelwise("train", "--config", config, "--out", run_dir, *TINY_TRAIN, "--resume", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    final = load_checkpoint(last)
    assert final["epoch"] in (EPOCHS - 1, EPOCHS)  # the last epoch, whether epochs count from 0 or 1
    assert final["global_step"] > 0
    assert (run_dir / "checkpoints" / "best.pt").exists()
    load_checkpoint(run_dir / "checkpoints" / "best.pt")
    # Temp files of saves the kills interrupted are gone once a run resumes.
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    # No epoch lost or logged twice across the kills: metrics.jsonl has each epoch exactly once.
    import json

    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    assert sorted(epochs) == epochs and len(set(epochs)) == len(epochs) == EPOCHS, epochs
