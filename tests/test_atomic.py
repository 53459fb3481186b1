"""pixelwise.atomic: a write is all or nothing, also when the process dies between the
temporary write and the rename (the PIXELWISE_FAULT_BEFORE_RENAME hook, in real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from pixelwise import atomic

# Each writer, as the child runs it: writes NEW content to the target named in argv[1].
WRITERS = {
    "text": "atomic.write_text(path, 'new')",
    "json": "atomic.write_json(path, {'v': 'new'})",
    "image": "atomic.save_image(path, np.full((4, 5), 200, np.uint8))",
    "npy": "atomic.save_npy(path, np.full(3, 7))",
    "torch": "atomic.torch_save(path, {'v': torch.ones(2)})",
    "named": "with atomic.atomic_path(path) as tmp:  # for writers that want a file name\n    tmp.write_bytes(b'new')",
}
SUFFIX = {"text": ".txt", "json": ".json", "image": ".png", "npy": ".npy", "torch": ".pt", "named": ".bin"}

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np, torch
    from pixelwise import atomic
    path = Path(sys.argv[1])
    {write}
    print("renamed", flush=True)
    """
)


def _run_child(kind: str, path, fault: str):
    env = {**os.environ, atomic.FAULT_ENV: fault}
    return subprocess.run([sys.executable, "-c", CHILD.format(write=WRITERS[kind]), str(path)],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_kill_before_rename_leaves_the_old_file_and_no_partial_one(tmp_path, kind):
    target = tmp_path / f"out{SUFFIX[kind]}"
    target.write_bytes(b"old")
    result = _run_child(kind, target, fault=f"out{SUFFIX[kind]}")
    # The hook fired: killed by SIGKILL, before the line after the write.
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "renamed" not in result.stdout
    assert target.read_bytes() == b"old"  # untouched
    temps = [p for p in tmp_path.iterdir() if p != target]
    assert len(temps) == 1 and temps[0].name.startswith(f".{target.name}.") and temps[0].name.endswith(".tmp")
    assert temps[0].stat().st_size > 0  # the complete new content, waiting for a rename that never came
    assert atomic.remove_temp_files(tmp_path) == temps and sorted(tmp_path.iterdir()) == [target]
    # Without the hook the same write replaces the file and leaves nothing else behind.
    import torch

    exec(WRITERS[kind], {"atomic": atomic, "np": np, "torch": torch, "path": target})
    assert target.read_bytes() != b"old" and sorted(tmp_path.iterdir()) == [target]


def test_fault_glob_and_count(tmp_path):
    child = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from pixelwise import atomic
        folder = Path(sys.argv[1])
        for i in range(3):
            atomic.write_text(folder / "other.txt", str(i))  # never matches the glob
            atomic.write_text(folder / "last.pt", str(i))
            print(i, flush=True)
        """
    )
    env = {**os.environ, atomic.FAULT_ENV: "*.pt:2"}  # the second write of a matching name
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == -signal.SIGKILL and result.stdout.split() == ["0"]
    assert (tmp_path / "last.pt").read_text() == "0"
    assert (tmp_path / "other.txt").read_text() == "1"  # written before the killed one, in full
    assert [p.read_text() for p in tmp_path.glob(atomic.TEMP_GLOB)] == ["1"]


def test_exception_mid_write_removes_temp_and_keeps_target(tmp_path):
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"miou": 0.5})

    def broken(handle):
        handle.write(b'{"miou": ')
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic.write_with(target, broken)
    assert json.loads(target.read_text()) == {"miou": 0.5}
    assert sorted(tmp_path.iterdir()) == [target]
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("exporter failed")
    assert json.loads(target.read_text()) == {"miou": 0.5} and sorted(tmp_path.iterdir()) == [target]


def test_writers_round_trip(tmp_path):
    import torch

    atomic.write_csv(tmp_path / "a" / "t.csv", [["x", "y"], [1, "b,c"]])  # creates the folder
    assert (tmp_path / "a" / "t.csv").read_bytes() == b'x,y\r\n1,"b,c"\r\n'
    picture = np.arange(12, dtype=np.uint8).reshape(3, 4)
    atomic.save_image(tmp_path / "p.png", picture)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p.png")), picture)
    atomic.save_npy(tmp_path / "p.npy", picture)
    assert np.array_equal(np.load(tmp_path / "p.npy"), picture)
    atomic.torch_save(tmp_path / "c.pt", {"w": torch.arange(3)})
    assert torch.load(tmp_path / "c.pt", weights_only=True)["w"].tolist() == [0, 1, 2]
    atomic.copy_file(tmp_path / "c.pt", tmp_path / "d.pt")
    assert (tmp_path / "d.pt").read_bytes() == (tmp_path / "c.pt").read_bytes()
    assert not list(tmp_path.glob(atomic.TEMP_GLOB))


def test_written_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "report.html", "<p>")
        with atomic.atomic_path(tmp_path / "model.onnx") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    for name in ("report.html", "model.onnx"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # not mkstemp's 0600


def test_place_file_links_or_copies_and_is_idempotent(tmp_path, monkeypatch):
    from pixelwise import atomic

    src = tmp_path / "a.png"
    src.write_bytes(b"image bytes")
    linked = atomic.place_file(src, tmp_path / "out" / "a.png")
    assert linked.read_bytes() == b"image bytes" and os.path.samefile(src, linked)  # a hard link, no copy
    assert atomic.place_file(src, linked) == linked                               # already there: nothing to do

    def no_links(*_args):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_links)  # another file system: an atomic copy instead
    copied = atomic.place_file(src, tmp_path / "out2" / "a.png")
    assert copied.read_bytes() == b"image bytes" and not os.path.samefile(src, copied)
    assert not list((tmp_path / "out2").glob(".*.tmp"))
