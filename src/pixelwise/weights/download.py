"""Resumable HTTP downloads into a `.part` file, with the standard library alone.

urllib on purpose: the project needs GET with a Range header and nothing else, urllib
honours the usual HTTP(S)_PROXY / NO_PROXY variables and the system's CA store, and it
adds no dependency for a command most runs never call.

An interrupted transfer (connection dropped, timeout, fewer bytes than announced)
leaves the `.part` file; the next attempt, or the next `pixelwise weights fetch`, asks
for the rest with `Range: bytes=N-`. A server that ignores Range (200 instead of 206)
makes the file start over. Mirrors serve the same bytes, so a transfer begun on one
may finish on another. Verification is not done here: cache.install checks the digest.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from pixelwise.errors import WeightsError

CHUNK = 1 << 16
Progress = Callable[[int, "int | None"], None]


class _Interrupted(Exception):
    """The transfer stopped early; the bytes so far are on disk and can be resumed."""


def _user_agent() -> str:
    from pixelwise import __version__

    return f"pixelwise/{__version__} (+weights fetch)"


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from `bytes 100-199/200` or `bytes */200`."""
    match = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return first, total


def _attempt(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    """One GET that appends to `part`; returns when the server's announced length arrived."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _user_agent(), "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Asked past the end: the part is complete if its size is the total, else restart.
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == have:
                return
            part.unlink()
            raise _Interrupted(f"{url}: range past the end of a {total}-byte file; starting over") from None
        raise
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        if status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != have:
                part.unlink(missing_ok=True)
                raise _Interrupted(f"{url}: server resumed at byte {first}, not {have}; starting over")
        else:
            have, total = 0, None  # Range ignored (or none asked): the body is the whole file
        if total is None and length is not None:
            total = have + int(length)
        mode = "ab" if have else "wb"
        received = have
        with open(part, mode) as handle:
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as exc:
                    raise _Interrupted(f"{url}: {type(exc).__name__} after {received} bytes") from None
                if not block:
                    break
                handle.write(block)
                received += len(block)
                if progress is not None:
                    progress(received, total)
        if total is not None and received < total:
            # http.client returns b"" when the connection closes early: check the count ourselves.
            raise _Interrupted(f"{url}: connection closed after {received} of {total} bytes")


def download(urls: list[str] | tuple[str, ...], part: Path, *, attempts: int = 4, timeout: float = 30.0,
             retry_wait: float = 1.0, progress: Progress | None = None) -> str:
    """Fetch the file into `part`, resuming it if it exists; return the URL that finished it.

    Each URL gets `attempts` tries that make no progress before the next URL is tried;
    an attempt that adds bytes resets the count. Raises WeightsError when every URL failed,
    keeping `part` so a later call resumes it.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for url in urls:
        failures = 0
        while failures < attempts:
            before = part.stat().st_size if part.exists() else 0
            try:
                _attempt(url, part, timeout, progress)
                return url
            except urllib.error.HTTPError as exc:
                problems.append(f"{url}: HTTP {exc.code} {exc.reason}")
                if exc.code in (401, 403, 404, 410):
                    break  # this URL will not work; try the next one
                failures += 1
            except _Interrupted as exc:
                problems.append(str(exc))
                after = part.stat().st_size if part.exists() else 0
                failures = 0 if after > before else failures + 1
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                problems.append(f"{url}: {reason}")
                failures += 1
            if failures < attempts:
                time.sleep(retry_wait * min(failures, 4))
    kept = part.stat().st_size if part.exists() else 0
    tail = "; ".join(problems[-3:])
    keep = f" {kept} bytes are kept in {part}; the next fetch resumes from there." if kept else ""
    raise WeightsError(f"download failed ({tail}).{keep} URLs tried: {', '.join(urls)}")
