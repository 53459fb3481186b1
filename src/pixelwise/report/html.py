"""Render the report as one self-contained HTML page (PNG plots embedded as base64).

Plain `string.Template` plus `html.escape`: the page is small and fixed, so a template
engine would add a dependency without removing any code. Every value from the run folder
is escaped, so a class or file name cannot inject markup.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from html import escape
from pathlib import Path
from string import Template
from typing import Any, Iterable

from pixelwise.report.gallery import GalleryEntry
from pixelwise.report.rundata import RunData

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pixelwise report: $title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em; color: #222; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #555; vertical-align: middle; margin-right: 0.3em; }
.missing { background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.5em 1em; }
.note { color: #666; font-style: italic; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.9em; color: #444; }
pre { background: #f8f8f8; padding: 0.8em; overflow: auto; font-size: 0.85em; }
#summary-table .key { color: #555; }
</style>
</head>
<body>
<h1>pixelwise report: $title</h1>
<p class="sub">Run folder <code>$run_dir</code>, report written $generated.</p>
$missing
<h2 id="summary">Run summary</h2>
$summary
<h2 id="curves">Training curves</h2>
$curves
<h2 id="per-class">Per-class scores</h2>
$per_class
<h2 id="confusion">Confusion matrix</h2>
$confusion
<h2 id="miou">Dataset-level and per-image mIoU</h2>
$miou
<h2 id="calibration">Calibration and uncertainty</h2>
$trust
<h2 id="gallery">Best and worst validation images</h2>
$gallery
</body>
</html>
""")


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers as fixed decimals; None/NaN as 'n/a' (the absent-class rule gives NaN)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def embed_png(path: Path, alt: str, css_class: str = "plot") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img class="{css_class}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _table(table_id: str, header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """Rows hold already-escaped HTML cells; a cell starting with '#' is right-aligned as a number."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if cell.startswith("#"):
                cells.append(f'<td class="num">{cell[1:]}</td>')
            else:
                cells.append(f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


MAX_LIST_ITEMS = 12   # longer lists (e.g. 30 class names) show their first items and a count


def _readable(value: Any) -> str:
    """A run.json / config value as readable escaped HTML: a dict becomes one `key: value` line
    per leaf (nested keys joined with ' › '), a list of plain values a comma-separated list."""
    if isinstance(value, dict):
        lines = [f'<span class="key">{escape(key)}</span>: {text}' for key, text in _flatten(value)]
        return "<br>".join(lines) if lines else "n/a"
    return _plain(value)


def _flatten(value: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(label, escaped HTML) per leaf of a nested dict, in the dict's order."""
    rows: list[tuple[str, str]] = []
    for key, item in value.items():
        label = f"{prefix} › {_label(key)}" if prefix else _label(key)
        if isinstance(item, dict) and item:
            rows += _flatten(item, label)
        else:
            rows.append((label, _plain(item)))
    return rows


def _label(key: Any) -> str:
    return str(key).replace("_", " ")


def _plain(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else escape(f"{value:.6g}")
    if isinstance(value, dict):  # an empty dict, or one inside a list
        return escape(json.dumps(value, default=str)) if value else "n/a"
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        shown = ", ".join(_plain(v) for v in value[:MAX_LIST_ITEMS])
        more = len(value) - MAX_LIST_ITEMS
        return shown + (f" … ({more} more)" if more > 0 else "")
    return escape(str(value))


def _summary(data: RunData) -> str:
    config = data.config or {}
    info = data.run_info or {}
    rows = []

    def add(label: str, *candidates: Any) -> None:
        for value in candidates:
            if value not in (None, "", {}, []):
                rows.append([escape(label), _readable(value)])
                return

    add("Data", info.get("dataset"), config.get("data"))
    add("Model", info.get("model"), config.get("model"))
    add("Task", info.get("task"), config.get("task"))
    add("Classes", ", ".join(data.class_names) if data.class_names else None)
    if data.history:
        rows.append(["Epochs recorded", f"#{len(data.history)}"])
        mious = [row.get("val_miou", math.nan) for row in data.history]
        finite = [(v, row["epoch"]) for v, row in zip(mious, data.history) if math.isfinite(v)]
        if finite:
            best, epoch = max(finite)
            rows.append(["Best validation mIoU", f"#{fmt(best)} (epoch {fmt(epoch, 0)})"])
    wall = next((info[k] for k in ("wall_seconds", "wall_time_s", "wall_time") if k in info), None)
    if isinstance(wall, (int, float)):
        rows.append(["Wall time", f"#{escape(_duration(float(wall)))}"])
    else:
        add("Wall time", wall)
    add("Hardware", info.get("hardware"))
    add("Versions", info.get("versions"))
    shown = {"dataset", "model", "task", "wall_seconds", "wall_time_s", "wall_time", "hardware", "versions", "classes"}
    for key, value in info.items():
        if key not in shown:
            add(key.replace("_", " ").capitalize(), value)
    parts = [_table("summary-table", ["Item", "Value"], rows) if rows else _note("No run information recorded.")]
    if data.config is not None:
        import yaml

        text = yaml.safe_dump(data.config, sort_keys=False, default_flow_style=False)
        parts.append(f"<details><summary>Resolved configuration (config.yaml)</summary><pre>{escape(text)}</pre></details>")
    return "\n".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _per_class(data: RunData, bar_plot: Path | None) -> str:
    metrics = data.eval_metrics or {}
    per_class = metrics.get("per_class")
    if not isinstance(per_class, dict) or not per_class:
        return _note("No per-class scores yet: run `pixelwise evaluate` on this run.")
    colors = dict(zip(data.class_names, data.class_colors))
    rows = []
    for name, scores in per_class.items():
        r, g, b = colors.get(name, (200, 200, 200))
        swatch = f'<span class="swatch" style="background: rgb({r},{g},{b})"></span>'
        rows.append([swatch + escape(name)] + [
            "#" + fmt(None if scores.get(key) is None else float(scores[key])) for key in ("iou", "dice", "accuracy", "precision")
        ] + ["#" + fmt(scores.get("support"))])
    parts = [_table("per-class-table", ["Class", "IoU", "Dice", "Accuracy", "Precision", "Support (pixels)"], rows)]
    parts.append(_note("n/a: the class has no pixels in the targets and none predicted, so it is left out of every mean."))
    if bar_plot is not None:
        parts.append(embed_png(bar_plot, "per-class IoU and Dice bar chart"))
    return "\n".join(parts)


def _miou(data: RunData, hist_plot: Path | None) -> str:
    metrics = data.eval_metrics
    if not metrics:
        return _note("No evaluation yet: run `pixelwise evaluate` on this run.")
    per_image = metrics.get("per_image_miou")
    ci = metrics.get("miou_ci") or [None, None]
    rows = [
        ["Dataset-level mIoU (one confusion matrix over all images)", "#" + fmt(_num(metrics.get("miou")))],
        ["Mean per-image mIoU", "#" + fmt(_num(per_image))],
        ["95% bootstrap CI of mIoU, low", "#" + fmt(_num(ci[0] if len(ci) > 0 else None))],
        ["95% bootstrap CI of mIoU, high", "#" + fmt(_num(ci[1] if len(ci) > 1 else None))],
        ["Pixel accuracy", "#" + fmt(_num(metrics.get("pixel_accuracy")))],
        ["Mean class accuracy", "#" + fmt(_num(metrics.get("mean_accuracy")))],
        ["Frequency-weighted IoU", "#" + fmt(_num(metrics.get("fwiou")))],
        ["Mean Dice", "#" + fmt(_num(metrics.get("mean_dice")))],
        ["Images", "#" + fmt(metrics.get("num_images"))],
    ]
    parts = [_table("miou-table", ["Score", "Value"], rows)]
    parts.append(_note("The dataset-level mIoU pools all pixels before dividing, so large images weigh more; the "
                       "per-image mean weighs every image equally. A wide interval means few or very different images."))
    if hist_plot is not None:
        parts.append(embed_png(hist_plot, "per-image mIoU histogram"))
    return "\n".join(parts)


def _num(value: Any) -> float | None:
    if isinstance(value, list):  # per_image_miou may be stored as the list of values
        finite = [float(v) for v in value if v is not None and math.isfinite(float(v))]
        return sum(finite) / len(finite) if finite else None
    return None if value is None else float(value)


def _gallery(entries: list[GalleryEntry]) -> str:
    if not entries:
        return _note("No gallery images: `pixelwise evaluate` writes them to eval/gallery/.")
    parts = ['<p>Each row: image | ground truth | prediction | errors (red = wrong, green = right, gray = not labelled).</p>']
    for group in ("best", "worst", "unranked"):
        chosen = [e for e in entries if e.group == group]
        if not chosen:
            continue
        parts.append(f"<h3>{escape(group.capitalize())}</h3>")
        for entry in chosen:
            caption = (f"{escape(entry.name)}: mIoU {fmt(entry.miou)}, pixel accuracy {fmt(entry.pixel_accuracy)}, "
                       f"{fmt(100 * entry.error_share, 1)}% of labelled pixels wrong")
            parts.append(f'<figure class="gallery">{embed_png(entry.strip_path, entry.name)}'
                         f"<figcaption>{caption}</figcaption></figure>")
    return "\n".join(parts)


def render(data: RunData, plots: dict[str, Path], gallery: list[GalleryEntry], notes: list[str]) -> str:
    """The whole page. `plots` maps curves/per_class/confusion/per_image to PNG paths (absent = not drawn)."""
    missing = ""
    if notes:
        items = "".join(f"<li>{escape(n)}</li>" for n in notes)
        missing = f'<div class="missing" id="missing"><strong>Not in this report yet:</strong><ul>{items}</ul></div>'
    confusion = (embed_png(plots["confusion"], "normalised confusion matrix") if "confusion" in plots
                 else _note("No confusion matrix yet: run `pixelwise evaluate` on this run."))
    curves = (embed_png(plots["curves"], "training curves") if "curves" in plots
              else _note("No training history yet (metrics.jsonl has no completed epoch)."))
    return PAGE.substitute(
        title=escape(data.name),
        run_dir=escape(str(data.run_dir.resolve())),
        generated=escape(_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        missing=missing,
        summary=_summary(data),
        curves=curves,
        per_class=_per_class(data, plots.get("per_class")),
        confusion=confusion,
        miou=_miou(data, plots.get("per_image")),
        gallery=_gallery(gallery),
        trust=_trust(data, plots),
    )


def _trust(data: RunData, plots: dict[str, Path]) -> str:
    from pixelwise.report import trust

    return trust.section(data.eval_metrics, plots, embed_png)
