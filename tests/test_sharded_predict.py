"""Sharded, resumable batch prediction: --shard, torchrun, --resume, --merge, manifests, Ray Data.

Every test runs the real `pixelwise predict` command (or torchrun around it) on real PNG files
and compares outputs byte for byte with a plain single-process run.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.errors import ConfigError, DataError
from pixelwise.inference.sharding import Shard, merge_shards, parse_shard, read_manifest
from pixelwise.tasks import Task
from test_predictor import make_checkpoint

PIXELWISE = [sys.executable, "-m", "pixelwise"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
COMMON = ["--device", "cpu", "--precision", "fp32", "--batch-size", "1", "--no-progress"]


def run_cli(*args, env=ONE_THREAD) -> subprocess.CompletedProcess:
    return subprocess.run([*PIXELWISE, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def digests(out: Path) -> dict[str, str]:
    """Every output file (labels, overlays) by relative path -> sha256 of its bytes."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("labels", "overlays") for p in sorted((out / sub).glob("*")) if p.is_file()}


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


# ---------------------------------------------------------------- pure logic


def test_shards_are_disjoint_deterministic_and_cover_everything():
    items = [f"p{i}" for i in range(11)]
    shards = [Shard(i, 3).select(items) for i in range(3)]
    assert shards == [["p0", "p3", "p6", "p9"], ["p1", "p4", "p7", "p10"], ["p2", "p5", "p8"]]
    assert sorted(sum(shards, [])) == sorted(items)


def test_parse_shard_from_flag_and_torchrun_environment():
    assert parse_shard("1/4", env={}) == Shard(1, 4)
    assert parse_shard(None, env={"RANK": "2", "WORLD_SIZE": "3"}) == Shard(2, 3)
    assert parse_shard("0/2", env={"RANK": "1", "WORLD_SIZE": "3"}) == Shard(0, 2)  # the flag wins
    assert parse_shard(None, env={}) == Shard(0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad, env={})


def test_one_gpu_per_rank_where_there_are_gpus(monkeypatch):
    """predict resolves its device with the one resolver: under torchrun, auto/cuda -> cuda:LOCAL_RANK."""
    import torch

    from pixelwise.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)   # asked for
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")                        # not a multi-process run
    assert resolve_device("auto") == torch.device("cuda")


def test_manifest_lines_csv_and_missing_files(tmp_path):
    images = make_images(tmp_path / "imgs", 3)
    lines = tmp_path / "list.txt"
    lines.write_text("# inputs\nimgs/img_0001.png\n\n" + f"{images[0]}\n")
    assert read_manifest(lines) == [images[1], images[0]]
    table = tmp_path / "list.csv"
    table.write_text("id,path\n7,imgs/img_0002.png\n8,imgs/img_0000.png\n")
    assert read_manifest(table) == [images[2], images[0]]
    broken = tmp_path / "broken.txt"
    broken.write_text("\n".join(f"imgs/gone_{i}.png" for i in range(7)) + "\nimgs/img_0000.png\n")
    with pytest.raises(DataError) as info:
        read_manifest(broken)
    message = str(info.value)
    assert str(broken) in message and "7 listed file(s) do not exist" in message
    assert "gone_0.png" in message and "gone_4.png" in message and "and 2 more" in message


# ---------------------------------------------------------------- the command


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=3))
    return tmp_path / "m.pt"


def test_shards_merge_to_the_single_process_result(tmp_path, checkpoint):
    make_images(tmp_path / "in", 9)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    whole = run_cli("predict", checkpoint, tmp_path / "in", "--out", tmp_path / "whole", *COMMON)
    assert whole.returncode == 1 and "broken.png" in whole.stderr  # 1: some inputs failed

    for index in range(2):
        proc = run_cli("predict", checkpoint, tmp_path / "in", "--out", tmp_path / "shards", "--shard", f"{index}/2",
                       *COMMON)
        assert proc.returncode in (0, 1), proc.stderr
        assert f"shard {index}/2: 5 of 10 inputs" in proc.stdout
    assert digests(tmp_path / "shards") == digests(tmp_path / "whole")

    merged = run_cli("predict", "--merge", tmp_path / "shards")
    assert merged.returncode == 1 and "broken.png" in merged.stderr
    assert csv_rows(tmp_path / "shards" / "class_shares.csv") == csv_rows(tmp_path / "whole" / "class_shares.csv")
    assert len(csv_rows(tmp_path / "whole" / "class_shares.csv")) == 1 + 9


def test_manifest_naming_missing_files_fails_before_any_work(tmp_path, checkpoint):
    make_images(tmp_path / "in", 2)
    manifest = tmp_path / "m.txt"
    manifest.write_text("in/img_0000.png\nin/nope.png\n")
    proc = run_cli("predict", checkpoint, "--manifest", manifest, "--out", tmp_path / "out", *COMMON)
    assert proc.returncode == 2
    assert "nope.png" in proc.stderr and "do not exist" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_resume_skips_done_inputs_and_replaces_half_written_files(tmp_path, checkpoint):
    make_images(tmp_path / "in", 6)
    first = run_cli("predict", checkpoint, tmp_path / "in", "--out", tmp_path / "out", *COMMON)
    assert first.returncode == 0, first.stderr
    reference = digests(tmp_path / "out")
    # Simulate a kill: two inputs lose their done marker and one leaves a half-written label.
    for name in ("img_0002", "img_0004"):
        (tmp_path / "out" / ".done" / f"{name}.json").unlink()
    (tmp_path / "out" / "labels" / "img_0004.png").unlink()
    (tmp_path / "out" / "labels" / ".img_0004.png.k1ll3d.tmp").write_bytes(b"\x89PNG half")  # atomic's temp name
    (tmp_path / "out" / ".done" / ".img_0002.json.k1ll3d.tmp").write_text('{"image": ')     # a torn marker

    again = run_cli("predict", checkpoint, tmp_path / "in", "--out", tmp_path / "out", "--resume", *COMMON)
    assert again.returncode == 0, again.stderr
    assert "predicted 2 image(s)" in again.stdout and "4 already done" in again.stdout
    assert digests(tmp_path / "out") == reference
    assert not list((tmp_path / "out").glob("*/.*.tmp")) and not list((tmp_path / "out").glob(".*.tmp"))
    assert len(csv_rows(tmp_path / "out" / "class_shares.csv")) == 1 + 6


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        for child in map(int, text):
            found += [child, *_children(child)]
    return found


@pytest.mark.slow
def test_torchrun_two_processes_killed_midway_then_resumed(tmp_path, checkpoint):
    make_images(tmp_path / "in", 200)
    single = run_cli("predict", checkpoint, tmp_path / "in", "--out", tmp_path / "single", *COMMON)
    assert single.returncode == 0, single.stderr

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", "0", "-m", "pixelwise", "predict", str(checkpoint), str(tmp_path / "in"),
                "--out", str(tmp_path / "multi"), *COMMON]
    proc = subprocess.Popen(torchrun, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    done = tmp_path / "multi" / ".done"
    rank1 = {f"img_{i:04d}.json" for i in range(1, 200, 2)}
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if done.is_dir() and len(rank1 & {p.name for p in done.iterdir()}) >= 25:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    workers = [pid for pid in _children(proc.pid)
               if "pixelwise" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    rank_of = {pid: dict(line.split("=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().decode()
                         .split("\0") if "=" in line).get("RANK") for pid in workers}
    victim = next(pid for pid, rank in rank_of.items() if rank == "1")
    os.kill(victim, signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    finished = len(list(done.glob("*.json")))
    assert 25 <= finished < 200, finished

    resumed = subprocess.run([*torchrun, "--resume"], capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stdout

    assert digests(tmp_path / "multi") == digests(tmp_path / "single")  # every output, byte-identical
    assert not list((tmp_path / "multi").glob("*/.*.tmp"))
    merged = merge_shards([tmp_path / "multi"])
    assert merged.rows == 200 and not merged.duplicates and not merged.failures
    assert csv_rows(merged.csv_path) == csv_rows(tmp_path / "single" / "class_shares.csv")


@pytest.mark.slow
def test_ray_engine_writes_what_the_plain_command_writes(tmp_path, checkpoint):
    pytest.importorskip("ray", reason="Ray Data is the optional extra `ray` (CI installs it)")
    make_images(tmp_path / "in", 12)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    plain = run_cli("predict", checkpoint, tmp_path / "in", "--out", tmp_path / "plain", *COMMON)
    ray_env = {**ONE_THREAD, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    viaray = run_cli("predict", checkpoint, tmp_path / "in", "--out", tmp_path / "ray", "--engine", "ray",
                     "--ray-workers", "2", *COMMON, env=ray_env)
    assert plain.returncode == 1 and viaray.returncode == 1, viaray.stderr
    assert "broken.png" in viaray.stderr
    assert digests(tmp_path / "ray") == digests(tmp_path / "plain")
    assert csv_rows(tmp_path / "ray" / "class_shares.csv") == csv_rows(tmp_path / "plain" / "class_shares.csv")
