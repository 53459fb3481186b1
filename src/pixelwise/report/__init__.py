"""The run report: one self-contained HTML file plus the plots as PNG files.

    from pixelwise.report import write_report
    path = write_report("runs/camvid_unet")   # -> runs/camvid_unet/report.html

Works on partial runs: whatever is missing is listed at the top of the page instead of
failing. Inputs are described in docs/report_and_serve.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pixelwise import atomic
from pixelwise.report.rundata import RunData, read_run

__all__ = ["write_report", "read_run", "RunData"]


def _draw_plots(data: RunData, plots_dir: Path, notes: list[str]) -> dict[str, Path]:
    """Draw every plot the data allows; one that fails becomes a note, not a failed report."""
    from pixelwise.report import plots

    drawn: dict[str, Path] = {}

    def attempt(key: str, what: str, draw) -> None:
        try:
            drawn[key] = draw()
        except Exception as exc:  # noqa: BLE001 - a report at the end of training must not crash it
            notes.append(f"{what}: could not be drawn ({type(exc).__name__}: {exc})")

    if data.history:
        attempt("curves", "training curves", lambda: plots.training_curves(data.history, plots_dir / "training_curves.png"))
    metrics = data.eval_metrics or {}
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict) and per_class:
        names = list(per_class.keys())
        colors = dict(zip(data.class_names, data.class_colors))
        palette = [colors.get(n, (160, 160, 160)) for n in names]
        attempt("per_class", "per-class chart",
                lambda: plots.per_class_bars(names, palette, per_class, plots_dir / "per_class.png"))
    matrix = metrics.get("confusion_matrix")
    if matrix:
        array = np.asarray(matrix, dtype=float)
        if array.ndim == 2 and array.shape[0] == array.shape[1]:
            names = data.class_names if len(data.class_names) == array.shape[0] else [str(i) for i in range(array.shape[0])]
            attempt("confusion", "confusion matrix",
                    lambda: plots.confusion_heatmap(array, names, plots_dir / "confusion_matrix.png"))
        elif array.ndim == 3:
            notes.append("confusion matrix: a multilabel run has one 2x2 matrix per class "
                         "(eval/confusion_matrix.csv); no heatmap is drawn")
        else:
            notes.append(f"confusion matrix: expected a square matrix, found shape {array.shape}")
    elif data.eval_metrics is not None:
        notes.append("confusion matrix: eval/metrics.json has no confusion_matrix")
    if data.eval_metrics is not None:
        values = [row["miou"] for row in data.per_image]
        miou = metrics.get("miou")
        attempt("per_image", "per-image histogram", lambda: plots.per_image_histogram(
            values, math.nan if miou is None else float(miou), metrics.get("miou_ci"), plots_dir / "per_image_miou.png"))
        from pixelwise.report import trust

        trust.draw(metrics, plots_dir, attempt)  # reliability diagram, error-versus-uncertainty curve
    return drawn


def write_report(run_dir: str | Path, output: str | Path | None = None, gallery_size: int = 4) -> Path:
    """Write RUN_DIR/report.html (or `output`) and RUN_DIR/plots/*.png; returns the HTML path.

    Raises DataError only when RUN_DIR is not a folder; anything else missing is reported
    in the page itself.
    """
    from pixelwise.report import gallery, html

    data = read_run(run_dir)
    run_dir = data.run_dir
    notes = list(data.missing)
    plots_dir = run_dir / "plots"
    drawn = _draw_plots(data, plots_dir, notes)
    entries: list[gallery.GalleryEntry] = []
    if data.eval_metrics is not None:
        if not gallery.available_names(run_dir / "eval" / "gallery"):
            notes += gallery.recompute_gallery(run_dir, data.eval_metrics, data.per_image, gallery_size)
        entries, gallery_notes = gallery.build_gallery(
            run_dir, data.per_image, data.class_colors, plots_dir / "gallery", data.ignore_index, gallery_size
        )
        notes += gallery_notes
    page = html.render(data, drawn, entries, notes)
    output = Path(output) if output is not None else run_dir / "report.html"
    # A browser or a CI artifact step may read report.html while training rewrites it.
    atomic.write_text(output, page)
    return output
