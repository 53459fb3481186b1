"""Read a run folder into one object, tolerating every part that is not there yet.

A report must work on a run that is still training (no eval/, one epoch, a half-written
last line in metrics.jsonl), so every reader returns None/empty and adds a note to
`RunData.missing` instead of raising. Only a folder that does not exist is an error.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelwise.errors import DataError

# Used only when neither run.json nor a checkpoint records the class colours.
DEFAULT_PALETTE: list[tuple[int, int, int]] = [
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]


@dataclass
class RunData:
    """Everything the report shows, read from RUN_DIR; absent parts are None or empty."""

    run_dir: Path
    config: dict[str, Any] | None = None
    run_info: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    eval_metrics: dict[str, Any] | None = None
    per_image: list[dict[str, Any]] = field(default_factory=list)  # name, miou, pixel_accuracy
    class_names: list[str] = field(default_factory=list)
    class_colors: list[tuple[int, int, int]] = field(default_factory=list)
    ignore_index: int = 255
    missing: list[str] = field(default_factory=list)  # human-readable notes for the report

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name


def to_float(value: Any) -> float:
    """JSON/CSV value -> float; null, '', 'nan' and unparsable values become NaN."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_json(path: Path, data: RunData, what: str) -> Any:
    if not path.is_file():
        data.missing.append(f"{what}: {path.name} not found")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        data.missing.append(f"{what}: {path.name} is unreadable ({exc})")
        return None


def _read_config(run_dir: Path, data: RunData) -> None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        data.missing.append("configuration: config.yaml not found")
        return
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        data.missing.append(f"configuration: config.yaml is unreadable ({exc})")
        return
    data.config = loaded if isinstance(loaded, dict) else None


def _read_history(run_dir: Path, data: RunData) -> None:
    rows: list[dict[str, float]] = []
    jsonl, csv_path = run_dir / "metrics.jsonl", run_dir / "metrics.csv"
    if jsonl.is_file():
        for number, line in enumerate(jsonl.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                # A run still writing its last line; the earlier epochs are still good.
                data.missing.append(f"training history: metrics.jsonl line {number} is incomplete and was skipped")
                continue
            if isinstance(row, dict):
                rows.append({key: to_float(value) for key, value in row.items()})
    elif csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8", errors="replace") as handle:
            rows = [{key: to_float(value) for key, value in row.items() if key} for row in csv.DictReader(handle)]
    else:
        data.missing.append("training history: neither metrics.jsonl nor metrics.csv found (no epoch finished yet?)")
    data.history = [row for row in rows if "epoch" in row]
    if (jsonl.is_file() or csv_path.is_file()) and not data.history:
        data.missing.append("training history: no complete epoch recorded yet")


def _read_per_image(run_dir: Path, data: RunData) -> None:
    path = run_dir / "eval" / "per_image.csv"
    if not path.is_file():
        rows = (data.eval_metrics or {}).get("per_image")
        if isinstance(rows, list):  # the same rows are kept inside metrics.json
            data.per_image = [{"name": str(r["name"]), "miou": to_float(r.get("miou")),
                               "pixel_accuracy": to_float(r.get("pixel_accuracy"))}
                              for r in rows if isinstance(r, dict) and r.get("name") is not None]
        elif data.eval_metrics is not None:
            data.missing.append("per-image scores: eval/per_image.csv not found")
        return
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        for row in csv.DictReader(handle):
            if not row.get("name"):
                continue
            data.per_image.append({
                "name": row["name"],
                "miou": to_float(row.get("miou")),
                "pixel_accuracy": to_float(row.get("pixel_accuracy")),
            })


def _read_classes(run_dir: Path, data: RunData) -> None:
    """Names and colours: run.json, then a checkpoint, then eval names with a default palette."""
    names: list[str] = []
    colors: list[Any] = []
    sources = []
    if data.run_info and isinstance(data.run_info.get("classes"), dict):
        sources.append(data.run_info["classes"])
    if not sources:
        for ckpt_name in ("best.pt", "last.pt"):
            ckpt_path = run_dir / "checkpoints" / ckpt_name
            if ckpt_path.is_file():
                try:
                    from pixelwise.checkpoint import read_meta

                    meta = read_meta(ckpt_path)
                except Exception as exc:  # a broken checkpoint must not stop the report
                    data.missing.append(f"class colours: {ckpt_path.name} unreadable ({exc})")
                    continue
                if meta.class_names:
                    sources.append({"names": list(meta.class_names), "colors": [list(c) for c in meta.class_colors],
                                    "ignore_index": meta.ignore_index})
                    break
    if sources:
        names = [str(n) for n in sources[0].get("names", [])]
        colors = list(sources[0].get("colors", []))
        data.ignore_index = int(sources[0].get("ignore_index", 255))
    if not names and data.eval_metrics and isinstance(data.eval_metrics.get("per_class"), dict):
        names = list(data.eval_metrics["per_class"].keys())
    if not names and data.eval_metrics and data.eval_metrics.get("confusion_matrix"):
        names = [f"class {i}" for i in range(len(data.eval_metrics["confusion_matrix"]))]
    clean_colors: list[tuple[int, int, int]] = []
    for i in range(len(names)):
        try:
            r, g, b = (int(c) for c in colors[i])
            clean_colors.append((r, g, b))
        except (IndexError, TypeError, ValueError):
            clean_colors.append(DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)])
    data.class_names, data.class_colors = names, clean_colors


def read_run(run_dir: str | Path) -> RunData:
    """Read RUN_DIR (layout in docs/architecture.md). Raises DataError only if it is no folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "no such run folder")
    data = RunData(run_dir=run_dir)
    _read_config(run_dir, data)
    data.run_info = _read_json(run_dir / "run.json", data, "run information")
    _read_history(run_dir, data)
    metrics_path = run_dir / "eval" / "metrics.json"
    if metrics_path.is_file():
        loaded = _read_json(metrics_path, data, "evaluation")
        data.eval_metrics = loaded if isinstance(loaded, dict) else None
    else:
        data.missing.append("evaluation: eval/metrics.json not found (run `pixelwise evaluate RUN_DIR`)")
    _read_per_image(run_dir, data)
    _read_classes(run_dir, data)
    return data
