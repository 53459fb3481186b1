"""Render BENCHMARKS.md from the JSON written by `pixelwise bench --out FILE.json`.

    python -m pixelwise.bench.make_benchmarks_md bench/results.json BENCHMARKS.md \
        [--quality camvid=runs/camvid --quality isbi=runs/isbi --quality quickstart=runs/quickstart]

Quality rows come from run folders (RUN_DIR/eval/metrics.json and RUN_DIR/run.json), either
given here with --quality or stored in the JSON by `pixelwise bench --quality-runs`.
BENCHMARKS.md is always regenerated, never edited by hand. Paths in it are relative to the
current directory (the repository root, where `make benchmarks-md` runs), never a machine's
absolute layout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

# SegNet-Basic on the CamVid 11-class test set with this split, as published by the SegNet
# tutorial and reported by ChainerCV (see ../shared/data/README.md): our CamVid reference.
SEGNET_BASIC = {"miou": 46.3, "pixel_accuracy": 82.8, "mean_accuracy": 62.3}

AREA_TITLES = {
    "defaults": "Defaults chosen on this machine (precision, inference backend)",
    "predict_memory": "`pixelwise predict` peak memory on an 8192x8192 image",
    "matmul": "Matmul peak (the physical reference)",
    "confusion": "Confusion-matrix update vs torchmetrics",
    "models": "Models at 512x512: training and inference images/s",
    "loader": "Data loading vs training",
    "tiling": "Tiled inference on a large image",
    "onnx": "ONNX Runtime vs PyTorch eager",
    "sliding_window": "Sliding-window classifier vs FCN-8s",
    "serve": "HTTP service under load",
}

# Keys under which run.json may record the wall time of a run, in seconds.
WALL_TIME_KEYS = ("wall_time_s", "wall_seconds", "wall_time", "train_seconds", "elapsed_s",
                  "duration_s", "total_seconds")


class QualityRunError(Exception):
    """A quality run folder is missing its metrics or they are unreadable."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QualityRunError(f"{path}: missing (run `pixelwise evaluate` on the run folder first)") from None
    except (OSError, ValueError) as exc:
        raise QualityRunError(f"{path}: unreadable JSON ({exc})") from None


def _wall_time(info: dict[str, Any]) -> float | None:
    """The run's wall time in seconds from run.json, searching one level of nesting."""
    for scope in [info] + [v for v in info.values() if isinstance(v, dict)]:
        for key in WALL_TIME_KEYS:
            if isinstance(scope.get(key), (int, float)):
                return float(scope[key])
    return None


def relative(path: str | Path, base: str | Path | None = None) -> str:
    """`path` relative to `base` (default: the current directory, the repository root)."""
    return os.path.relpath(Path(path).resolve(), Path(base or Path.cwd()).resolve())


def _dataset(value: Any, run_dir: Path) -> str | None:
    """The run's data, as a path relative to the repository (run.json records a folder relative
    to the run folder; older run.json files, an absolute path), or a synthetic spec as is."""
    text = _describe(value)
    root = value.get("root") if isinstance(value, dict) else value
    if isinstance(root, str) and root and not root.startswith("synthetic:") and text == root:
        return relative(run_dir / root)  # an absolute root stays itself under the join
    return text


def portable(row: dict[str, Any]) -> dict[str, Any]:
    """A stored quality row with its absolute paths (run folder, data) made relative."""
    return {key: relative(value) if key in ("run_dir", "dataset") and isinstance(value, str)
            and os.path.isabs(value) else value for key, value in row.items()}


def read_quality_run(name: str, run_dir: Path) -> dict[str, Any]:
    """One quality row from a run folder: dataset-level metrics, foreground scores, wall time."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise QualityRunError(f"{run_dir}: not a run folder (quality run {name!r})")
    metrics = _read_json(run_dir / "eval" / "metrics.json")
    info = _read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    per_class = metrics.get("per_class") or {}
    row: dict[str, Any] = {
        "name": name,
        "run_dir": relative(run_dir),
        "miou": metrics.get("miou"),
        "pixel_accuracy": metrics.get("pixel_accuracy"),
        "mean_accuracy": metrics.get("mean_accuracy"),
        "mean_dice": metrics.get("mean_dice"),
        "num_images": metrics.get("num_images"),
        "wall_time_s": _wall_time(info),
        "model": _describe(info.get("model")),
        "dataset": _dataset(info.get("dataset"), run_dir),
        "epochs": info.get("epochs_run"),
        "training_input": _training_input(run_dir / "config.yaml"),
        "command": info.get("command"),
    }
    if len(per_class) == 2:  # binary: the foreground class (ISBI membranes) is the second one
        fg_name, fg = list(per_class.items())[1]
        row["foreground"] = {"name": fg_name, "iou": fg.get("iou"), "dice": fg.get("dice")}
    return row


def _training_input(config_path: Path) -> str | None:
    """What the network saw in training, from the run's resolved recipe: crop size and
    model.kwargs.input_scale (evaluation always scores whole images at full resolution)."""
    if not config_path.is_file():
        return None
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
        crop = (config.get("data") or {}).get("crop_size")
        scale = ((config.get("model") or {}).get("kwargs") or {}).get("input_scale", 1.0)
    except (yaml.YAMLError, AttributeError) as exc:
        raise QualityRunError(f"{config_path}: unreadable recipe: {exc}") from None
    text = f"{crop}x{crop} crops" if crop else "whole images"
    return text + (f", network at {scale:g}x" if scale != 1 else "")


def _describe(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("name", "spec", "root", "path"):
            if isinstance(value.get(key), str):
                return value[key]
    return json.dumps(value)[:60]


def cell(value: Any) -> str:
    """A table cell: 3 significant figures for floats, a dash for missing values."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    headers = [cell(h) for h in headers]  # a "|" in a header would split the column
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "not measured"}[passed]


def render_goals(areas: dict[str, Any]) -> list[str]:
    rows = []
    for name, area in areas.items():
        for g in area.get("goals", []):
            measured = "—" if g.get("measured") is None else f"{cell(g['measured'])}{g.get('unit', '')}"
            rows.append([name, cell(g["goal"]), cell(g["target"]), measured, _verdict(g.get("passed"))])
    if not rows:
        return ["No goals were measured in this run."]
    return table(["Area", "Goal", "Target", "Measured", "Result"], rows)


def render_area(name: str, area: dict[str, Any], measured: str | None = None) -> list[str]:
    lines = [f"### {AREA_TITLES.get(name, name)}", ""]
    if area.get("measured") and area["measured"] != measured:
        lines += [f"Measured {area['measured']} (an earlier `pixelwise bench --only` run on this machine).", ""]
    if area.get("status") != "ok":
        lines += [f"*{area.get('status', 'error')}: {area.get('reason', 'no reason recorded')}* "
                  f"(command: `{area.get('command', '')}`)", ""]
        return lines
    columns = area.get("columns", [])
    rows = []
    for row in area.get("rows", []):
        cells = []
        for key, _ in columns:
            value = row.get(key)
            cells.append(f"`{value}`" if key == "command" and value else cell(value))
        rows.append(cells)
    lines += table([header for _, header in columns], rows) + [""]
    for note in area.get("notes", []):
        lines += [f"- {note}"]
    lines += [f"- Area wall time: {cell(area.get('seconds'))} s.", ""]
    return lines


def render_quality(quality: dict[str, Any]) -> list[str]:
    lines = ["### Quality (test-set metrics of trained runs)", ""]
    if not quality:
        return lines + ["No quality runs recorded. Add them with `--quality NAME=RUN_DIR` (this script) or "
                        "`pixelwise bench --quality-runs NAME=RUN_DIR ...`.", ""]
    headers = ["Run", "Data", "Model", "Training input", "Epochs", "mIoU %", "Global acc %", "Class-avg acc %",
               "Mean Dice %", "Foreground IoU / Dice %", "Images", "Wall time", "vs SegNet-Basic mIoU 46.3",
               "Run folder"]
    commands = []
    rows = []
    for name, q in quality.items():
        fg = q.get("foreground")
        fg_text = f"{fg['name']}: {_percent(fg.get('iou'))} / {_percent(fg.get('dice'))}" if fg else "—"
        wall = q.get("wall_time_s")
        wall_text = "—" if wall is None else f"{wall / 60:.1f} min"
        is_camvid = "camvid" in name.lower() or "camvid" in (q.get("dataset") or "").lower()
        versus = "—"
        if is_camvid and q.get("miou") is not None:
            versus = "PASS" if 100 * q["miou"] > SEGNET_BASIC["miou"] else "FAIL"
        if q.get("command"):
            commands.append(f"- {name}: `{q['command']}`")
        rows.append([cell(name), cell(q.get("dataset")), cell(q.get("model")), cell(q.get("training_input")),
                     cell(q.get("epochs")), _percent(q.get("miou")),
                     _percent(q.get("pixel_accuracy")), _percent(q.get("mean_accuracy")),
                     _percent(q.get("mean_dice")), fg_text, cell(q.get("num_images")), wall_text, versus,
                     f"`{q.get('run_dir')}`"])
        if is_camvid:
            rows.append(["SegNet-Basic (published, CamVid test)", "CamVid 11 classes", "segnet_basic",
                         "480x360", "—", f"{SEGNET_BASIC['miou']}", f"{SEGNET_BASIC['pixel_accuracy']}",
                         f"{SEGNET_BASIC['mean_accuracy']}", "—", "—", "233", "—", "reference",
                         "SegNet tutorial, as reported by ChainerCV"])
    if commands:
        commands = ["", "Commands (from each run's run.json; run from the repository root):", ""] + commands
    return lines + table(headers, rows) + commands + [
        "", "- Metrics from RUN_DIR/eval/metrics.json (`pixelwise evaluate`); wall time (training with "
        "validation) and epochs from RUN_DIR/run.json; training input from RUN_DIR/config.yaml. Test images "
        "are scored whole, at their full resolution.",
        "- Global acc = pixel accuracy; class-avg acc = mean per-class recall; absent classes are left out "
        "of means (docs/architecture.md).", ""]


HEADER = [
    "<!-- GENERATED FILE: do not edit by hand. -->",
    "# Benchmarks",
    "",
]
_BEGIN, _END = "<!-- machine: ", "<!-- end machine: "


def render_machine(doc: dict[str, Any], source: str = "bench/results.json") -> list[str]:
    """One machine's section: its table, goals, areas and quality rows, between markers."""
    from pixelwise.bench.harness import machine_key

    machine = doc.get("machine", {})
    key = machine_key(machine)
    lines = [f"{_BEGIN}{key} -->", f"## Machine: {key}", "",
             f"Measured {machine.get('date', 'at an unknown date')} with `{doc.get('command', 'pixelwise bench')}`, "
             f"rendered from `{source}`.", ""]
    if doc.get("quick"):
        lines += ["> **Quick run**: smoke-test sizes and repeats; these figures are not representative.", ""]
    lines += table(["Property", "Value"], [
        ["CPU", cell(machine.get("cpu_model"))],
        ["CPU features", cell(", ".join(machine.get("cpu_flags", [])) or None)],
        ["Cores (logical / usable)", f"{cell(machine.get('logical_cores'))} / {cell(machine.get('usable_cores'))}"],
        ["Memory", f"{cell(machine.get('memory_gib'))} GiB"],
        ["torch", cell(machine.get("torch"))],
        ["torch threads", cell(machine.get("torch_threads"))],
        ["Python", cell(machine.get("python"))],
        ["Platform", cell(machine.get("platform"))],
        ["Date", cell(machine.get("date"))],
    ]) + ["", "### Goals", ""] + render_goals(doc.get("areas", {})) + [""]
    for name, area in doc.get("areas", {}).items():
        lines += render_area(name, area, machine.get("date"))
    lines += render_quality(doc.get("quality") or {})
    return [*lines, f"{_END}{key} -->"]


def earlier_sections(text: str) -> list[tuple[str, list[str]]]:
    """(machine key, lines) of every machine section in an existing BENCHMARKS.md.

    A file from before sections existed (one machine, `## Machine` table) becomes one section,
    keyed by its table's CPU and features, its headings one level down.
    """
    from pixelwise.bench.harness import machine_key

    lines = text.splitlines()
    sections: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in lines:
        if line.startswith(_BEGIN):
            current = (line[len(_BEGIN):].removesuffix(" -->"), [line])
        elif current is not None:
            current[1].append(line)
            if line.startswith(_END):
                sections.append(current)
                current = None
    if sections or "## Machine" not in text:
        return sections
    cells = {row.split("|")[1].strip(): row.split("|")[2].strip() for row in lines
             if row.startswith("| ") and row.count("|") >= 3}
    flags = [] if cells.get("CPU features", "—") == "—" else [f.strip() for f in cells["CPU features"].split(",")]
    key = machine_key({"cpu_model": cells.get("CPU"), "cpu_flags": flags})
    start = next(i for i, line in enumerate(lines) if line.startswith("Measured ") or line == "## Machine")
    body = [("#" + line) if line.startswith("## ") else line for line in lines[start:]]
    return [(key, [f"{_BEGIN}{key} -->", f"## Machine: {key}", "", *body, f"{_END}{key} -->"])]


SCRIPT_RESULTS = Path("bench/script_results.jsonl")


def render_script_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Rows from the stand-alone scripts (scripts/bench_*.py): scale-out and huge rasters.

    These run real commands for minutes, so they are not part of `pixelwise bench`; each row
    carries its own CPU, flags and the load average it ran under.
    """
    if not rows:
        return []
    lines = ["## Scale-out and large rasters (`scripts/bench_*.py`)", "",
             "Each row: the command that made it, the CPU it ran on, and the 1-minute load average "
             "(above the core count means other work shared the cores, so times are inflated; peak RSS is not).", ""]
    body = []
    for row in rows:
        what = row.get("engine") or f"{row.get('model')} ({row.get('classes')} classes)"
        size = (f"{row.get('images')} images of {row.get('size')}x{row.get('size')}" if "images" in row
                else f"{row.get('width')}x{row.get('height')}")
        rate = (f"{row['images_per_s']} images/s, overhead {row.get('overhead_ms_per_image')} ms/image"
                if "images_per_s" in row else f"{row.get('mpixel_per_s')} Mpixel/s")
        cpu = f"{row.get('cpu')} ({', '.join(row.get('flags', []))}), {row.get('cores')} cores"
        body.append([cell(row.get("benchmark")), cell(what), size, f"{row.get('wall_s')} s", rate,
                     f"{row['peak_rss_mib']} MiB" if "peak_rss_mib" in row else "-", cpu,
                     cell(row.get("load_avg_1m")), f"`{row.get('command')}`", cell(row.get("note"))])
    return lines + table(["benchmark", "what", "input", "wall", "throughput", "peak RSS", "CPU", "load",
                          "command", "note"], body)


def read_script_rows(path: Path = SCRIPT_RESULTS) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def render(doc: dict[str, Any], source: str = "bench/results.json", earlier: str = "",
           script_rows: list[dict[str, Any]] | None = None) -> str:
    """The whole BENCHMARKS.md: this run's machine first, then the other machines' sections
    found in `earlier` (the previous BENCHMARKS.md), kept as they were."""
    from pixelwise.bench.harness import machine_key

    key = machine_key(doc.get("machine", {}))
    others = [(k, body) for k, body in earlier_sections(earlier) if k != key]
    lines = HEADER + [
        f"Generated by `python -m pixelwise.bench.make_benchmarks_md` from `{source}`. To regenerate: "
        "`make bench && make benchmarks-md` (that is `pixelwise bench --out bench/results.json`, then "
        "`python -m pixelwise.bench.make_benchmarks_md bench/results.json BENCHMARKS.md`).",
        "",
        "One section per machine (CPU model and its avx2 / avx512f / avx512_bf16 / amx_bf16 flags): a run "
        "replaces its own machine's section and leaves the others as they were. Each figure is the median of "
        "several timed runs after warm-up, with min and max; variants compared in one row were timed "
        "interleaved (A B A B ...), and ratios are medians of per-round ratios.",
        "",
        "Machines: " + "; ".join(f"`{k}`" for k in [key, *(k for k, _ in others)]) + ".",
        "",
    ]
    lines += render_machine(doc, source)
    for _, body in others:
        lines += ["", *body]
    script = render_script_rows(script_rows or [])
    if script:
        lines += ["", *script]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render BENCHMARKS.md from pixelwise bench results.")
    parser.add_argument("results", type=Path, help="JSON written by `pixelwise bench --out`")
    parser.add_argument("output", type=Path, help="markdown file to write (BENCHMARKS.md)")
    parser.add_argument("--quality", action="append", default=[], metavar="NAME=RUN_DIR",
                        help="add a quality row from a run folder (repeatable); overrides the JSON's entry")
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: {args.results}: cannot read benchmark results ({exc}); run `make bench` first",
              file=sys.stderr)
        return 2
    # Rows stored by an older `pixelwise bench --quality-runs` may hold absolute paths.
    quality = {name: portable(row) for name, row in (doc.get("quality") or {}).items()}
    try:
        for entry in args.quality:
            name, sep, run_dir = entry.partition("=")
            if not sep or not name or not run_dir:
                raise QualityRunError(f"--quality expects NAME=RUN_DIR, got {entry!r}")
            quality[name] = read_quality_run(name, Path(run_dir))
    except QualityRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc["quality"] = quality
    earlier = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
    args.output.write_text(render(doc, source=relative(args.results), earlier=earlier,
                                  script_rows=read_script_rows()), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
