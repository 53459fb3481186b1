"""`pixelwise data check`: find every problem in a data folder, never stopping at the first.

Errors: unreadable/truncated/empty files, images without masks and masks without images,
size mismatches, mask values outside the classes, masks that look bilinearly resized,
empty splits, the same image in two splits (by content hash).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelwise.data.classes import _UNKNOWN, MaskDecoder
from pixelwise.data.io import read_image
from pixelwise.data.masks import (class_pixel_counts, is_colour_mask, looks_resized, read_mask, size_mismatch,
                                  squeeze_grey)
from pixelwise.data.layouts import Layout, Sample, scan_layout
from pixelwise.errors import DataError


@dataclass
class Issue:
    severity: str          # "error" or "warning"
    kind: str              # unreadable, orphan_image, orphan_mask, size_mismatch, bad_values, resized_mask, ...
    path: str | None
    message: str


@dataclass
class CheckReport:
    data: str
    layout: str
    classes: list[str]
    ignore_index: int
    splits: dict[str, int]
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unknown_values: dict[str, list[str]] = field(default_factory=dict)  # value -> files

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["num_errors"] = len(self.errors)
        d["num_warnings"] = len(self.issues) - len(self.errors)
        return d

    def summary(self) -> str:
        lines = [f"data: {self.data} ({self.layout} layout)",
                 f"classes ({len(self.classes)}): {', '.join(self.classes)}; ignore_index {self.ignore_index}",
                 "splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items())]
        lines += [f"note: {n}" for n in self.notes]
        by_kind: dict[str, list[Issue]] = defaultdict(list)
        for issue in self.issues:
            by_kind[issue.kind].append(issue)
        for kind, issues in by_kind.items():
            lines.append(f"{issues[0].severity}s: {kind} ({len(issues)})")
            for issue in issues[:20]:
                lines.append(f"  {issue.path or ''}: {issue.message}" if issue.path else f"  {issue.message}")
            if len(issues) > 20:
                lines.append(f"  ... and {len(issues) - 20} more (use --json for all)")
        if self.unknown_values:
            lines.append("mask values outside the classes:")
            for value, files in self.unknown_values.items():
                lines.append(f"  {value}: {len(files)} file(s), e.g. {', '.join(Path(f).name for f in files[:3])}")
        n_err = len(self.errors)
        lines.append(f"{'OK' if self.ok else 'FAILED'}: {n_err} error(s), {len(self.issues) - n_err} warning(s)")
        return "\n".join(lines)


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        return None


def _check_sample(sample: Sample, decoder: MaskDecoder, encoding: str) -> dict[str, Any]:
    """Everything about one sample; no exception escapes."""
    out: dict[str, Any] = {"issues": [], "hash": _file_hash(sample.image_path), "unknown": []}
    issues = out["issues"]
    img_shape = None
    try:
        img_shape = read_image(sample.image_path).shape
    except DataError as exc:
        issues.append(Issue("error", "unreadable", str(sample.image_path), exc.problem))
    if sample.mask_path is None:
        return out
    refs = sample.mask_path if isinstance(sample.mask_path, tuple) else (sample.mask_path,)
    for ref in refs:
        try:
            raw = read_mask(ref)
        except DataError as exc:
            issues.append(Issue("error", "unreadable", str(ref), exc.problem))
            continue
        mismatch = img_shape is not None and size_mismatch(
            raw.shape, img_shape, sample.image_path.name, channels_first=encoding == "multilabel")
        if mismatch:
            issues.append(Issue("error", "size_mismatch", str(ref), mismatch))
        if encoding == "multilabel":
            try:
                if isinstance(sample.mask_path, tuple):
                    vals = np.unique(raw)
                    if not set(vals.tolist()) <= {0, 1, 255}:
                        raise DataError(ref, f"per-class mask values must be 0/1 or 0/255, got {vals[:10].tolist()}")
                else:
                    decoder.decode_multilabel(raw, ref)
            except DataError as exc:
                issues.append(Issue("error", "bad_values", str(ref), exc.problem))
            continue
        if is_colour_mask(raw, encoding):
            try:
                decoder.decode_rgb(raw[..., :3], ref)
            except DataError as exc:
                issues.append(Issue("error", "bad_values", str(ref), exc.problem))
            continue
        raw = squeeze_grey(raw)
        if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
            issues.append(Issue("error", "bad_values", str(ref), f"mask of shape {raw.shape}, dtype {raw.dtype} "
                                "is not an index map"))
            continue
        counts = class_pixel_counts(raw)
        present = np.flatnonzero(counts)
        unknown = [int(v) for v in present if v > 65535 or decoder.lut[v] == _UNKNOWN]
        if unknown:
            out["unknown"] = unknown
            issues.append(Issue("error", "bad_values", str(ref),
                                f"values {unknown[:20]} are not classes 0..{decoder.classes.num_classes - 1} "
                                f"or ignore {decoder.classes.ignore_index}"))
        if len(present) > 2 and looks_resized(raw, decoder.valid_values()):
            issues.append(Issue("error", "resized_mask", str(ref),
                                "looks bilinearly resized (value ramps at class edges); resize masks with "
                                "nearest-neighbour only"))
    return out


def check_layout(layout: Layout, data: str, workers: int = 2) -> CheckReport:
    splits = {name: len(samples) for name, samples in layout.splits.items()}
    report = CheckReport(data, layout.kind, list(layout.classes.names), layout.classes.ignore_index, splits,
                         notes=list(layout.notes))
    add = report.issues.append
    for path, problem in layout.problems:
        add(Issue("error", "layout", str(path) if path else None, problem))
    for path, problem in layout.warnings:
        add(Issue("warning", "annotation", str(path) if path else None, problem))
    for p in layout.orphan_images:
        add(Issue("error", "orphan_image", str(p), "image without a mask"))
    for p in layout.orphan_masks:
        add(Issue("error", "orphan_mask", str(p), "mask without an image"))
    for name in sorted(set(layout.declared_splits) | {"train"} & set(splits)):
        if splits.get(name, 0) == 0:
            add(Issue("error", "empty_split", None, f"split {name!r} has no image+mask pairs"))
    if not any(splits.values()):
        add(Issue("error", "empty_split", str(layout.root), "no image+mask pairs found at all"))

    decoder = MaskDecoder(layout.classes, layout.encoding)
    jobs = [(split, s) for split, samples in layout.splits.items() for s in samples]
    hashes: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    unknown: dict[int, list[str]] = defaultdict(list)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # decoders release the GIL
        for (split, sample), result in zip(jobs, pool.map(lambda j: _check_sample(j[1], decoder, layout.encoding),
                                                          jobs)):
            report.issues.extend(result["issues"])
            if result["hash"]:
                hashes[result["hash"]].append((split, sample.image_path))
            ref = sample.mask_path[0] if isinstance(sample.mask_path, tuple) else sample.mask_path
            for v in result["unknown"]:
                unknown[v].append(str(ref))
    for entries in hashes.values():
        if len(entries) > 1:
            in_splits = sorted({s for s, _ in entries})
            files = ", ".join(f"{s}/{p.name}" for s, p in entries)
            if len(in_splits) > 1:
                add(Issue("error", "duplicate_across_splits", str(entries[0][1]),
                          f"identical image in splits {in_splits}: {files}"))
            else:
                add(Issue("warning", "duplicate", str(entries[0][1]), f"identical images: {files}"))
    report.unknown_values = {str(v): files for v, files in sorted(unknown.items())}
    return report


def check_data(spec: str | Path, workers: int = 2) -> CheckReport:
    """Check a data folder (any supported layout) or a synthetic spec; see module docstring."""
    from pixelwise.data.dataset import open_dataset, parse_spec

    kind, where, _ = parse_spec(spec)
    if kind == "synthetic":
        import torch

        report = CheckReport(str(spec), "synthetic", [], 255, {})
        for split in ("train", "val", "test"):
            ds = open_dataset(spec, split)
            report.classes, report.ignore_index = list(ds.classes.names), ds.classes.ignore_index
            report.splits[split] = len(ds)
            for i in range(min(len(ds), 4)):
                ds.task.check_target(ds[i][1][None])
        report.notes.append("generated data: exact masks by construction; checked a few samples per split")
        return report
    return check_layout(scan_layout(Path(where).expanduser()), str(spec), workers)
