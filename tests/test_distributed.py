"""DDP through a real torchrun (gloo on this CPU): two processes train a tiny recipe, only
rank 0 writes, and the distributed evaluation equals a single-process one exactly. Two spawned
ranks (gloo on loopback) on different data end with the weights of one process trained on the
union of their batches: gradients really are averaged across processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pixelwise.losses import cross_entropy
from pixelwise.models import create_model
from pixelwise.tasks import Task
from pixelwise.training.distributed import cleanup, init_distributed, wrap_model
from pixelwise.training.loop import train_one_epoch

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

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


# --- gradients are really synchronised: two ranks on different data end where one process
# on the union of their batches ends. Mean-reduced loss, equal per-rank batches and plain SGD
# (no momentum) make the two runs the same arithmetic up to float rounding; no BatchNorm, whose
# per-rank batch statistics would differ from the union's by design.
WORLD = 2
STEPS = 3
LR = 0.5


def _tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("unet", num_classes=3, in_channels=3, base_channels=4, depth=2, batch_norm=False)


def _rank_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
    return [(torch.randn(2, 3, 16, 16, generator=g), torch.randint(0, 3, (2, 16, 16), generator=g))
            for _ in range(STEPS)]


def _train(model: torch.nn.Module, batches, info=None) -> None:
    device = torch.device("cpu")
    wrapped = model if info is None else wrap_model(model, info, device)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=LR, momentum=0.0)
    task = Task("multiclass", 3)
    result = train_one_epoch(wrapped, batches, lambda logits, target: cross_entropy(logits, target, task),
                             optimizer, None, device=device)
    assert result.steps == STEPS


def _ddp_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = init_distributed(torch.device("cpu"))
    assert (info.rank, info.world_size, info.enabled) == (rank, WORLD, True)
    # Rank 1 starts from other weights: wrapping must hand it rank 0's before the first step.
    model = _tiny_model(seed=0 if rank == 0 else 99)
    _train(model, _rank_batches(rank), info)
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    cleanup()


@pytest.mark.slow  # two spawned processes each import torch: about a minute on 2 busy cores
@pytest.mark.timeout(300)
def test_two_ranks_on_different_data_end_like_one_process_on_the_union(tmp_path):
    port = free_port()
    torch.multiprocessing.start_processes(_ddp_rank, args=(port, str(tmp_path)), nprocs=WORLD, join=True,
                                          start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks disagree on {key}"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        initial = _tiny_model(seed=0).state_dict()
        single = _tiny_model(seed=0)
        union = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
                 for a, b in zip(_rank_batches(0), _rank_batches(1))]  # step k: rank 0's batch k + rank 1's
        _train(single, union)
        alone = _tiny_model(seed=0)
        _train(alone, _rank_batches(0))  # what rank 0 would reach with unsynchronised gradients
    finally:
        torch.set_num_threads(threads)
    moved = far = 0.0
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6, msg=key)
        moved = max(moved, (value - initial[key]).abs().max().item())
        far = max(far, (alone.state_dict()[key] - value).abs().max().item())
    # The check can tell: training moved the weights, and rank 0 on its own data ends elsewhere.
    assert moved > 1e-2 and far > 1e-3, (moved, far)


PLAN_SCRIPT = """
import importlib, json, os, sys
fp = importlib.import_module("pixelwise.planning.fingerprint")
calls = []
real = fp.measure
fp.measure = lambda *a, **k: calls.append(1) or real(*a, **k)
from pixelwise.planning import plan_config
from pixelwise.training.distributed import cleanup
config, plan = plan_config({"train": {"device": "cpu"}}, data=sys.argv[2], minutes=0.2, say=lambda line: None)
rank = os.environ["RANK"]
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"config": config.to_dict(), "measured": len(calls)}, f)
cleanup()
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_under_torchrun_rank_0_plans_and_every_rank_trains_its_plan(tmp_path):
    script = tmp_path / "plan_ranks.py"
    script.write_text(PLAN_SCRIPT)
    env = {**_env(), "PIXELWISE_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path), "synthetic:shapes?n=12&n_val=4&n_test=4&size=32"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["measured"] == 1 and rank1["measured"] == 0     # only rank 0 fingerprints (and probes)
    assert rank0["config"] == rank1["config"] and rank0["config"]["plan"]["reasons"]
