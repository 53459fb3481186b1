"""Run the benchmark areas in order and collect one JSON document (the input of BENCHMARKS.md).

Entry point: `pixelwise bench [--quick] [--only AREA,...] [--out FILE.json]` (the command
module imports this one, never the other way round: the suite sits below the interface).
"""

from __future__ import annotations

import importlib
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from pixelwise.bench.harness import Context, machine_info, machine_key, machine_line, make_context, not_available

SCHEMA = "pixelwise-bench/1"

# Area name -> module of pixelwise.bench, run in this order (cheap, reference figures first).
AREAS: dict[str, str] = {
    "defaults": "pixelwise.bench.bench_defaults",
    "matmul": "pixelwise.bench.bench_matmul",
    "confusion": "pixelwise.bench.bench_confusion",
    "models": "pixelwise.bench.bench_models",
    "loader": "pixelwise.bench.bench_loader",
    "tiling": "pixelwise.bench.bench_tiling",
    "predict_memory": "pixelwise.bench.bench_predict_memory",
    "onnx": "pixelwise.bench.bench_onnx",
    "sliding_window": "pixelwise.bench.bench_sliding_window",
    "serve": "pixelwise.bench.serve_area",
}


def parse_only(only: str | None) -> list[str]:
    """Validate a comma-separated --only list against the known areas (all when None)."""
    if not only:
        return list(AREAS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in AREAS]
    if unknown:
        raise ValueError(f"unknown benchmark area(s) {', '.join(unknown)}; known: {', '.join(AREAS)}")
    return names


def missing_piece(exc: ImportError) -> str:
    """A one-line reason naming the module that is not there yet."""
    return f"not available: cannot import {exc.name or exc}" if isinstance(exc, ModuleNotFoundError) \
        else f"not available: {exc}"


def run_area(name: str, ctx: Context) -> dict[str, Any]:
    """Run one area; a missing piece becomes 'not available', any other failure 'error'."""
    command = ctx.command(name)
    start = time.perf_counter()
    try:
        module = importlib.import_module(AREAS[name])
        result = module.run(ctx)
    except ImportError as exc:
        result = not_available(missing_piece(exc).removeprefix("not available: "), command)
    except Exception as exc:  # one broken area must not hide the others' figures
        result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}", "command": command,
                  "traceback": traceback.format_exc(), "rows": [], "goals": []}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def run_benchmarks(
    *,
    quick: bool = False,
    only: list[str] | None = None,
    quality: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the chosen areas (all by default) and return the results document.

    `quality` holds rows already read by `make_benchmarks_md.read_quality_run`, stored as is.
    """
    areas = only or list(AREAS)
    prefix = "pixelwise bench"
    ctx = make_context(quick, command_prefix=prefix, results={}, log=log)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "quick": quick,
        "command": " ".join([prefix] + (["--quick"] if quick else []) + (["--only", ",".join(areas)] if only else [])),
        "machine": machine_info(),
        "areas": ctx.results,
    }
    log(f"machine: {machine_line(doc['machine'])}")
    for index, name in enumerate(areas, 1):
        log(f"[{index}/{len(areas)}] {name} ...")
        result = run_area(name, ctx)
        ctx.results[name] = result
        status = result["status"] if result["status"] == "ok" else f"{result['status']}: {result.get('reason')}"
        log(f"[{index}/{len(areas)}] {name}: {status} ({result['seconds']} s)")
    if quality:
        doc["quality"] = quality
    return doc


def merge_results(earlier: dict[str, Any] | None, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` plus the areas of an earlier results file from the same machine that `doc` did not rerun.

    So `pixelwise bench --only AREA --out bench/results.json` updates one area and keeps the
    others. Each area keeps the date it was measured (`measured`); another machine's file is
    replaced whole (its figures stay in BENCHMARKS.md, in that machine's own section).
    """
    for area in doc["areas"].values():
        area.setdefault("measured", doc["machine"].get("date"))
    if not earlier or machine_key(earlier.get("machine") or {}) != machine_key(doc["machine"]) \
            or bool(earlier.get("quick")) != bool(doc.get("quick")):
        return doc
    merged = dict(doc)
    kept = {name: dict(area, measured=area.get("measured") or (earlier.get("machine") or {}).get("date"))
            for name, area in (earlier.get("areas") or {}).items() if name not in doc["areas"]}
    merged["areas"] = {name: doc["areas"].get(name) or kept[name]
                       for name in [*AREAS, *kept, *doc["areas"]] if name in doc["areas"] or name in kept}
    if earlier.get("quality") and not doc.get("quality"):
        merged["quality"] = earlier["quality"]
    return merged


def write_results(doc: dict[str, Any], path: Path) -> None:
    """Write the results JSON (NaN becomes null so any JSON reader accepts it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(doc), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def json_safe(value: Any) -> Any:
    """`value` with every NaN float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
