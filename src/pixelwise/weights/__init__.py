"""Pretrained encoder weights: a verified catalogue, an explicit cache, strict loading.

Nothing here downloads unless `fetch` is called (by `pixelwise weights fetch`). A file
enters the cache only after its digest matched the catalogue, and its full sha256 is
pinned then; every later load re-hashes the bytes it reads against that pin.

    fetch(name, accept_licence=False)      download (resumable) and verify
    add(path, name=None)                   verify a file brought by hand (air-gapped machines)
    verify(name)                           re-hash a cached file
    cached(entry) / require(entry)         the verified file, or None / an error with the command
    load_into_encoder(encoder, entry)      strict load, listing missing/unexpected/mismatched keys
    load_pretrained(model, "imagenet")     the same for a built model's encoder
    resolve_recipe_weights(...)            `model.encoder_weights: imagenet` in a recipe
"""

from __future__ import annotations

import os
from pathlib import Path

from pixelwise.errors import WeightsError
from pixelwise.weights.cache import (
    CachedWeights,
    cached,
    file_path,
    install,
    missing_message,
    partial_path,
    pixelwise_home,
    require,
    sha256_file,
    verify,
    weights_dir,
)
from pixelwise.weights.catalogue import (
    WeightsEntry,
    get_weights,
    is_catalogue_reference,
    list_weights,
    weights_for_encoder,
)
from pixelwise.weights.download import Progress, download
from pixelwise.weights.load import KeyReport, load_into_encoder
from pixelwise.weights.recipe import RecipeWeights, find_encoder, load_pretrained, resolve_recipe_weights

MIRROR_ENV = "PIXELWISE_WEIGHTS_MIRROR"


def _entry(name_or_entry: str | WeightsEntry) -> WeightsEntry:
    return name_or_entry if isinstance(name_or_entry, WeightsEntry) else get_weights(name_or_entry)


def check_licence(entry: WeightsEntry, accept_licence: bool) -> None:
    if not entry.commercial_use and not accept_licence:
        raise WeightsError(f"weights {entry.name} are under the {entry.licence} ({entry.licence_url}). "
                           f"Read it; if your use fits it, run again with --accept-licence")


def source_urls(entry: WeightsEntry) -> list[str]:
    """Where to download from: $PIXELWISE_WEIGHTS_MIRROR/<file_name> first when set (an
    organisation's copy), then the catalogue's URLs. Every source is checked by digest."""
    urls = list(entry.urls)
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        urls.insert(0, f"{mirror.rstrip('/')}/{entry.file_name}")
    return urls


def fetch(name_or_entry: str | WeightsEntry, *, accept_licence: bool = False, urls: list[str] | None = None,
          progress: Progress | None = None, attempts: int = 4, timeout: float = 30.0,
          retry_wait: float = 1.0) -> CachedWeights:
    """Download `name` into the cache (resuming an earlier partial download), verify it,
    pin its full sha256. A verified cached file is returned without network access."""
    entry = _entry(name_or_entry)
    check_licence(entry, accept_licence)
    found = cached(entry)
    if found is not None:
        return found
    part = partial_path(entry)
    if file_path(entry).is_file():
        # A file without a valid pin (interrupted before the pin was written, or replaced by
        # hand): treat it as a download in progress; it is verified like any other.
        os.replace(file_path(entry), part)
    url = download(urls or source_urls(entry), part, attempts=attempts, timeout=timeout,
                   retry_wait=retry_wait, progress=progress)
    try:
        return install(entry, part, url, move=True, licence_accepted=accept_licence)
    except WeightsError:
        # A complete file with the wrong digest must not be resumed next time: start over then.
        part.unlink(missing_ok=True)
        raise


def identify(path: Path) -> WeightsEntry:
    """The catalogue entry a brought file claims to be: by file name, else by digest."""
    entries = list_weights()
    by_name = [e for e in entries if e.file_name == path.name]
    if by_name:
        return by_name[0]
    sha256 = sha256_file(path)
    by_digest = [e for e in entries if (sha256 == e.digest if e.full_digest else sha256.startswith(e.digest))]
    if len(by_digest) == 1:
        return by_digest[0]
    raise WeightsError(f"{path}: its sha256 {sha256} matches no catalogue entry; if it is one of them under "
                       f"another name, give --name (pixelwise weights list)")


def add(path: str | Path, name: str | None = None, *, accept_licence: bool = False) -> CachedWeights:
    """Verify a file brought by hand and copy it into the cache (the original stays)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    entry = get_weights(name) if name else identify(path)
    check_licence(entry, accept_licence)
    return install(entry, path, f"added from {path.resolve()}", move=False, licence_accepted=accept_licence)


__all__ = [
    "CachedWeights", "KeyReport", "RecipeWeights", "WeightsEntry", "add", "cached", "check_licence",
    "fetch", "file_path", "find_encoder", "get_weights", "identify", "is_catalogue_reference", "list_weights", "load_into_encoder", "load_pretrained",
    "missing_message", "partial_path", "pixelwise_home", "require", "resolve_recipe_weights", "source_urls",
    "verify", "weights_dir", "weights_for_encoder",
]
