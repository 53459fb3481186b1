"""Batch prediction split across processes and machines: shards, done markers, resume, merge.

Each process takes a disjoint, deterministic share of the inputs: the sorted input list,
every N-th path starting at I (round robin keeps shards balanced when file sizes drift along
the list). Output names are decided on the whole list before sharding, so they never depend
on how the work was split. Every finished input gets a done marker (written last, atomically,
holding its class-share row); `--resume` skips inputs whose marker exists, and each shard's CSV
is rebuilt from its markers, so a killed and resumed shard lists every input exactly once.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from pixelwise import atomic
from pixelwise.errors import ConfigError, DataError

DONE_DIR = ".done"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @property
    def suffix(self) -> str:
        """File-name tag of this shard's CSVs ('' for an unsharded run)."""
        return "" if self.is_whole else f".shard-{self.index:05d}-of-{self.count:05d}"

    def select(self, items: Sequence) -> list:
        return [item for k, item in enumerate(items) if k % self.count == self.index]


def parse_shard(text: str | None, env: dict | None = None) -> Shard:
    """`--shard I/N` (I from 0), else torchrun's RANK / WORLD_SIZE, else the whole input."""
    env = os.environ if env is None else env
    if text:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard must look like I/N with whole numbers (e.g. 0/4), got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"--shard {text}: need N >= 1 and 0 <= I < N (I counts from 0)")
        return Shard(index, count)
    if "WORLD_SIZE" in env and "RANK" in env:
        return Shard(int(env["RANK"]), int(env["WORLD_SIZE"]))
    return Shard()


def read_manifest(path: str | Path) -> list[Path]:
    """Paths from a manifest: one per line, or a CSV with a `path` column.

    Relative paths are relative to the manifest's folder. Missing files fail here, before any
    work starts, naming the first few.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(path, f"cannot read the manifest ({exc.strerror or exc})") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    header = [cell.strip().lower() for cell in next(csv.reader(lines[:1]), [])]
    if "path" in header:  # a CSV with a `path` column (other columns are the user's business)
        column = header.index("path")
        entries = [row[column].strip() for row in csv.reader(lines[1:]) if len(row) > column]
    else:
        entries = [line.strip() for line in lines if not line.lstrip().startswith("#")]
    if not entries:
        raise DataError(path, "the manifest lists no files")
    resolved = [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]
    missing = [p for p in resolved if not p.exists()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(path, f"{len(missing)} listed file(s) do not exist: {shown}{more}")
    return list(dict.fromkeys(resolved))


# ---------------------------------------------------------------- done markers


def marker_path(out: Path, name: str) -> Path:
    return Path(out) / DONE_DIR / f"{name}.json"


def is_done(out: Path, name: str) -> bool:
    return marker_path(out, name).is_file()


def mark_done(out: Path, name: str, row: dict) -> None:
    """Record an input as finished; written after all its outputs, atomically."""
    atomic.write_json(marker_path(out, name), row)


def read_done(out: Path, names: Iterable[str]) -> list[dict]:
    rows = []
    for name in names:
        marker = marker_path(out, name)
        if marker.is_file():
            rows.append(json.loads(marker.read_text()))
    return rows


def write_rows_csv(target: Path, class_names: Sequence[str], rows: Iterable[dict]) -> None:
    """The class-share CSV, sorted by image path, written atomically; with an
    `uncertainty_METHOD` column when the rows carry a per-image uncertainty (predict --uncertainty)."""
    rows = sorted(rows, key=lambda r: r["image"])
    methods = list(dict.fromkeys(r["uncertainty"]["method"] for r in rows if r.get("uncertainty")))
    extra = [f"uncertainty_{m}" for m in methods]

    def scores(row: dict) -> list[str]:
        own = row.get("uncertainty") or {}
        return [f"{own['mean']:.6f}" if own.get("method") == m else "" for m in methods]

    atomic.write_csv(target, [["image", "width", "height", *class_names, *extra]] + [
        [row["image"], row["width"], row["height"], *(f"{s:.6f}" for s in row["shares"]), *scores(row)]
        for row in rows])


def write_failures_csv(target: Path, failures: Iterable[tuple[Path, str]]) -> None:
    atomic.write_csv(target, [["image", "problem"]] + [
        [Path(path).as_posix(), problem] for path, problem in sorted(failures, key=lambda f: str(f[0]))])


# ---------------------------------------------------------------- merge


@dataclass
class MergeResult:
    csv_path: Path
    rows: int
    failures: list[tuple[str, str]]
    duplicates: list[str]


def merge_shards(folders: Sequence[str | Path], out: str | Path | None = None) -> MergeResult:
    """Join the shards' class-share CSVs (sorted by path) and collect their failure lists."""
    folders = [Path(f) for f in folders]
    share_files: list[Path] = []
    for folder in folders:  # a shard's CSVs, or the CSV of an unsharded run in its own folder
        found = sorted(folder.glob("class_shares.shard-*.csv"))
        share_files += found or [p for p in [folder / "class_shares.csv"] if p.is_file()]
    if not share_files:
        raise DataError(folders[0], "no class_shares*.csv from any shard here; run predict with --shard first")
    header: list[str] | None = None
    rows: dict[str, list[str]] = {}
    duplicates: list[str] = []
    for path in share_files:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            file_header = next(reader, None)
            if header is None:
                header = file_header
            elif file_header != header:
                raise DataError(path, f"its columns {file_header} differ from {share_files[0]}'s {header}: "
                                      "shards of one run must use the same model")
            for row in reader:
                if row[0] in rows:
                    duplicates.append(row[0])
                rows[row[0]] = row
    failures: list[tuple[str, str]] = []
    for path in sorted(p for f in folders for p in f.glob("failures*.csv")):  # failed and never redone
        with open(path, newline="") as handle:
            failures += [(r["image"], r["problem"]) for r in csv.DictReader(handle) if r["image"] not in rows]
    target = Path(out) if out else folders[0] / "class_shares.csv"
    atomic.write_csv(target, [header] + [rows[key] for key in sorted(rows)])
    return MergeResult(target, len(rows), sorted(set(failures)), sorted(set(duplicates)))


__all__ = ["Shard", "parse_shard", "read_manifest", "mark_done", "is_done", "read_done",
           "write_rows_csv", "write_failures_csv", "merge_shards", "MergeResult"]
