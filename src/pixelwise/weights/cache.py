"""The weights cache: verified files and their pins, under PIXELWISE_HOME.

Layout (one folder per catalogue entry):

    $PIXELWISE_HOME/weights/<name>/<file_name>        the verified file
    $PIXELWISE_HOME/weights/<name>/<file_name>.part   an unfinished download (resumed by fetch)
    $PIXELWISE_HOME/weights/<name>/pin.json           full sha256 and size pinned at first fetch

A file gets its final name only after its digest was checked (downloads and `weights
add` alike), so the presence of the file and its pin means "verified". PIXELWISE_HOME
defaults to `$XDG_CACHE_HOME/pixelwise`, else `~/.cache/pixelwise`, the same place
as the data statistics cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelwise import atomic
from pixelwise.errors import WeightsError
from pixelwise.weights.catalogue import WeightsEntry

PIN_FORMAT = "pixelwise-weights-pin/1"
# A published size is rounded (torchvision's MiB to 3 decimals, a Hugging Face page's
# "14.4 MB"): accept this relative difference before calling the file a different one.
APPROX_SIZE_TOLERANCE = 0.01


def pixelwise_home() -> Path:
    """$PIXELWISE_HOME, else the user's cache directory."""
    if os.environ.get("PIXELWISE_HOME"):
        return Path(os.environ["PIXELWISE_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pixelwise"


def weights_dir() -> Path:
    return pixelwise_home() / "weights"


def entry_dir(entry: WeightsEntry) -> Path:
    return weights_dir() / entry.name


def file_path(entry: WeightsEntry) -> Path:
    return entry_dir(entry) / entry.file_name


def partial_path(entry: WeightsEntry) -> Path:
    return entry_dir(entry) / (entry.file_name + ".part")


def pin_path(entry: WeightsEntry) -> Path:
    return entry_dir(entry) / "pin.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedWeights:
    """A verified file in the cache and what was pinned for it."""

    entry: WeightsEntry
    path: Path
    sha256: str
    size: int
    source: str

    def record(self) -> dict[str, Any]:
        """What a trained checkpoint keeps about its starting weights (no file needed later)."""
        return {"name": self.entry.name, "encoder": self.entry.encoder, "sha256": self.sha256,
                "size": self.size, "licence": self.entry.licence, "licence_url": self.entry.licence_url,
                "commercial_use": self.entry.commercial_use, "source": self.source}


def check_file(entry: WeightsEntry, sha256: str, size: int, where: Path | str) -> None:
    """Raise WeightsError unless (sha256, size) is what the catalogue publishes for `entry`."""
    if entry.size_bytes is not None and size != entry.size_bytes:
        raise WeightsError(f"{where}: {size} bytes, but {entry.name} is {entry.size_bytes} bytes "
                           f"({'truncated' if size < entry.size_bytes else 'too long'}; not the published file)")
    if entry.size_bytes is None and entry.approx_bytes is not None:
        if abs(size - entry.approx_bytes) > APPROX_SIZE_TOLERANCE * entry.approx_bytes:
            raise WeightsError(f"{where}: {size} bytes, but {entry.name} is published as about "
                               f"{entry.approx_bytes / 2**20:.1f} MiB; not the published file")
    if entry.full_digest and sha256 != entry.digest:
        raise WeightsError(f"{where}: sha256 {sha256} does not match {entry.name}'s published {entry.digest} "
                           f"(corrupt or different file)")
    if not entry.full_digest and not sha256.startswith(entry.digest):
        raise WeightsError(f"{where}: sha256 {sha256[:16]}... does not start with {entry.name}'s published "
                           f"prefix {entry.digest} (corrupt or different file)")


def read_pin(entry: WeightsEntry) -> dict[str, Any] | None:
    path = pin_path(entry)
    if not path.is_file():
        return None
    try:
        pin = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(pin, dict) or pin.get("format") != PIN_FORMAT or not isinstance(pin.get("sha256"), str):
        return None
    return pin


def install(entry: WeightsEntry, source: Path, origin: str, *, move: bool, licence_accepted: bool) -> CachedWeights:
    """Verify `source` against the catalogue, then put it in the cache under its final name
    and pin its full sha256 and size. `move` renames a finished download; otherwise the
    file is copied (the user's own file stays where it was)."""
    source = Path(source)
    size = source.stat().st_size
    sha256 = sha256_file(source)
    check_file(entry, sha256, size, source)
    target = file_path(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(source, target)
        atomic.fsync_dir(target.parent)
    else:
        with atomic.atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
            if sha256_file(tmp) != sha256:  # the copy itself must be the verified bytes
                raise WeightsError(f"{source}: changed while being copied into the cache; try again")
    atomic.write_json(pin_path(entry), {
        "format": PIN_FORMAT, "name": entry.name, "file": entry.file_name, "sha256": sha256, "size": size,
        "catalogue_digest": entry.digest, "source": origin, "licence": entry.licence,
        "licence_accepted": licence_accepted or entry.commercial_use,
        "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=2)
    return CachedWeights(entry, target, sha256, size, origin)


def cached(entry: WeightsEntry) -> CachedWeights | None:
    """The cached, pinned file for `entry`, or None. Cheap: compares sizes, not digests
    (load_weights re-hashes the bytes it reads)."""
    pin = read_pin(entry)
    path = file_path(entry)
    if pin is None or not path.is_file() or path.stat().st_size != pin.get("size"):
        return None
    return CachedWeights(entry, path, pin["sha256"], int(pin["size"]), str(pin.get("source", "")))


def missing_message(entry: WeightsEntry) -> str:
    """What to do when `entry` is not in the cache: the command, and the air-gapped route."""
    licence = (f" Its licence is {entry.licence} ({entry.licence_url}); --accept-licence says you accept it."
               if not entry.commercial_use else "")
    return (f"weights {entry.name} are not in the cache ({entry_dir(entry)}). Run:\n"
            f"  {entry.fetch_command()}\n"
            f"Without network access: download {entry.urls[0]} on another machine, bring the file here and run "
            f"`pixelwise weights add FILE`.{licence}")


def require(entry: WeightsEntry) -> CachedWeights:
    found = cached(entry)
    if found is None:
        raise WeightsError(missing_message(entry))
    return found


def verify(entry: WeightsEntry) -> CachedWeights:
    """Re-hash the cached file against its pin and the catalogue; WeightsError on any difference."""
    found = require(entry)
    sha256 = sha256_file(found.path)
    if sha256 != found.sha256:
        raise WeightsError(f"{found.path}: sha256 {sha256} differs from the one pinned at first fetch "
                           f"({found.sha256}); the file changed on disk. Delete {entry_dir(entry)} and run "
                           f"`{entry.fetch_command()}` again")
    check_file(entry, sha256, found.size, found.path)
    return found
