"""`pixelwise bench`: run the benchmark suite (pixelwise.bench) and write its JSON results.

The suite is part of the package and times the product's own code paths (the runtime
resolver, the training loop's step, the Predictor). BENCHMARKS.md is generated from the
JSON by `python -m pixelwise.bench.make_benchmarks_md RESULTS.json BENCHMARKS.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pixelwise.errors import ConfigError, DataError


def parse_quality_runs(entries: list[str] | None) -> dict[str, str]:
    """NAME=RUN_DIR entries -> {name: run_dir}; each folder must exist."""
    runs: dict[str, str] = {}
    for entry in entries or []:
        name, sep, run_dir = entry.partition("=")
        if not sep or not name or not run_dir:
            raise ConfigError(f"--quality-runs expects NAME=RUN_DIR, got {entry!r}")
        runs[name] = run_dir
    return runs


def handler(args: argparse.Namespace) -> int:
    from pixelwise.bench import run_all

    try:
        only = run_all.parse_only(args.only) if args.only else None
    except ValueError as exc:
        raise ConfigError(f"--only: {exc}") from None
    from pixelwise.bench.make_benchmarks_md import QualityRunError, read_quality_run

    quality = {}
    for name, run_dir in parse_quality_runs(args.quality_runs).items():
        try:  # read before the long run so a wrong folder fails at once
            quality[name] = read_quality_run(name, Path(run_dir))
        except QualityRunError as exc:
            raise DataError(None, str(exc)) from None

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    doc = run_all.run_benchmarks(quick=args.quick, only=only, quality=quality, log=log)
    if args.out:
        out = Path(args.out)
        try:  # areas not rerun keep their figures (same machine only); see run_all.merge_results
            earlier = json.loads(out.read_text(encoding="utf-8")) if only and out.is_file() else None
        except (OSError, ValueError):
            earlier = None
        doc = run_all.merge_results(earlier, doc)
        run_all.write_results(doc, out)
        log(f"results written to {out}; render with: python -m pixelwise.bench.make_benchmarks_md {out} BENCHMARKS.md")
    else:
        json.dump(run_all.json_safe(doc), sys.stdout, indent=2)
        print()
    for name, area in doc["areas"].items():
        for g in area.get("goals", []):
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[g["passed"]]
            measured = g["measured"]
            shown = f"{measured:.3g}{g.get('unit', '')}" if isinstance(measured, float) else str(measured)
            log(f"goal [{verdict}] {g['goal']}: {shown} (target {g['target']})")
    failed = [name for name, area in doc["areas"].items() if area["status"] == "error"]
    if failed:
        log(f"areas that failed: {', '.join(failed)} (see 'reason' and 'traceback' in the JSON)")
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run the speed benchmarks (matmul peak, models, data loading, metrics, tiling, ONNX)",
        description="Run the benchmark suite (pixelwise.bench); progress goes to stderr, results to --out "
        "(or stdout as JSON). Render BENCHMARKS.md with python -m pixelwise.bench.make_benchmarks_md.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run, minutes)")
    parser.add_argument("--only", metavar="AREA,...", help="comma-separated areas: matmul, confusion, models, "
                        "loader, tiling, onnx, sliding_window, serve")
    parser.add_argument("--out", metavar="FILE.json", help="write the results JSON here")
    parser.add_argument("--quality-runs", nargs="+", metavar="NAME=RUN_DIR",
                        help="add quality rows from run folders (RUN_DIR/eval/metrics.json and run.json)")
    parser.set_defaults(func=handler)
