"""Atomic file writes: every output pixelwise writes goes through here.

A write goes to a temporary file in the target's own folder (`.NAME.XXXXXX.tmp`), is flushed
and fsynced, then renamed over the target with `os.replace`, and the folder is fsynced so
the rename itself survives a power loss. A reader (or a run killed at any moment) therefore
sees the previous file or the new one, never a torn one. A kill between the write and the
rename leaves only the temp file behind; `remove_temp_files` deletes such leftovers.

Test hook: with the environment variable `PIXELWISE_FAULT_BEFORE_RENAME=GLOB[:N]` set, the
process SIGKILLs itself at the N-th (default first) write whose target file name matches
GLOB, after the temp file is complete and fsynced and before the rename. Tests use it to
land a kill deterministically inside a save (tests/test_kill_resume.py). Never set it
outside tests.

This module is the lowest layer: it imports nothing from pixelwise.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

FAULT_ENV = "PIXELWISE_FAULT_BEFORE_RENAME"
TEMP_GLOB = ".*.tmp"
_fault_hits = 0  # matching writes seen so far in this process


def _maybe_fault(path: Path) -> None:
    """The test hook described in the module docstring."""
    global _fault_hits
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    pattern, _, count = spec.rpartition(":")
    if not pattern or not count.isdigit():
        pattern, count = spec, "1"
    if not fnmatch.fnmatch(path.name, pattern):
        return
    _fault_hits += 1
    if _fault_hits >= int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def _mkstemp(path: Path) -> tuple[int, str]:
    """A temp file beside `path`, with the permissions a plain open() would give it
    (mkstemp makes 0600; outputs are ordinary files others may read)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    return fd, tmp_name


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable; a no-op where directories cannot be opened."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on normal exit it is fsynced and renamed onto `path`.

    For writers that insist on a file name (safetensors, ONNX, TorchScript). On an exception
    the temp file is deleted and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _mkstemp(path)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        _maybe_fault(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_with(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Atomically write `path` by calling `write(handle)` on a binary file handle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        _maybe_fault(path)
        os.replace(tmp_name, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda handle: handle.write(data))


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    """`json.dumps(obj, **dumps_kwargs)` written atomically, with a final newline."""
    return write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def write_csv(path: str | Path, rows: list[list[Any]] | Iterator[list[Any]]) -> Path:
    """Rows (the first is usually the header) as a CSV file, written atomically."""
    import csv

    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    return write_text(path, buffer.getvalue())


def save_image(path: str | Path, image: Any, **save_kwargs: Any) -> Path:
    """A PIL image, or an array PIL accepts, saved atomically; the format comes from the suffix."""
    from PIL import Image

    path = Path(path)
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    return write_with(path, lambda handle: picture.save(handle, format=fmt, **save_kwargs))


def save_npy(path: str | Path, array: Any) -> Path:
    import numpy as np

    return write_with(path, lambda handle: np.save(handle, array, allow_pickle=False))


def torch_save(path: str | Path, obj: Any) -> Path:
    import torch

    return write_with(path, lambda handle: torch.save(obj, handle))


def copy_file(source: str | Path, path: str | Path) -> Path:
    """Copy `source` to `path` atomically (e.g. best.pt from last.pt without re-serialising)."""
    with open(source, "rb") as src:
        return write_with(path, lambda handle: shutil.copyfileobj(src, handle, 1 << 20))


def place_file(source: str | Path, path: str | Path) -> Path:
    """Put `source` at `path` as a hard link (no copy of the bytes), or an atomic copy across
    file systems; nothing is done when `path` already is `source`. For images placed beside
    annotation files (data convert, pre-labels)."""
    source, path = Path(source), Path(path)
    if path.exists() and os.path.samefile(source, path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _mkstemp(path)
    os.close(fd)
    os.unlink(tmp_name)  # os.link needs a free name; the random one stays ours in practice
    try:
        os.link(source, tmp_name)
    except OSError:
        return copy_file(source, path)
    os.replace(tmp_name, path)
    fsync_dir(path.parent)
    return path


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files that writes killed before their rename left in `folder`.

    Call only when no other process writes to `folder` (a live write's temp file looks the same).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(TEMP_GLOB) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
