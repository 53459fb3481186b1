"""The report's "Calibration and uncertainty" section: a reliability diagram and an
error-versus-uncertainty curve, both read from eval/metrics.json (`calibration`, `uncertainty`)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pixelwise.report.plots import _save


def reliability_diagram(calibration: dict[str, Any], path: Path) -> Path:
    """Accuracy per confidence bin against the diagonal, with each bin's share of pixels below."""
    bins = calibration["bins"]
    n = int(calibration.get("n_bins") or len(bins["count"]))
    width = 1.0 / n
    lower = np.asarray(bins["lower"], dtype=float)
    accuracy = np.asarray([np.nan if v is None else v for v in bins["accuracy"]], dtype=float)
    confidence = np.asarray([np.nan if v is None else v for v in bins["confidence"]], dtype=float)
    count = np.asarray(bins["count"], dtype=float)
    fig = Figure(figsize=(5.2, 5.6))
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = count > 0
    ax.bar(lower[filled], accuracy[filled], width=width, align="edge", color="tab:blue", edgecolor="black",
           linewidth=0.5, label="accuracy")
    gap_low = np.minimum(accuracy, confidence)[filled]
    ax.bar(lower[filled], np.abs(confidence - accuracy)[filled], bottom=gap_low, width=width, align="edge",
           color="tab:red", alpha=0.35, label="gap to confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    temperature = calibration.get("temperature")
    applied = f", T = {', '.join(f'{t:.3g}' for t in temperature)}" if temperature else ""
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
           title=f"Reliability (ECE {_num(calibration.get('ece'))}, MCE {_num(calibration.get('mce'))}{applied})")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    total = max(count.sum(), 1.0)
    ax_count.bar(lower, count / total, width=width, align="edge", color="gray")
    ax_count.set(xlabel="top-label confidence", ylabel="share of pixels")
    fig.tight_layout()
    return _save(fig, path)


def error_uncertainty_curve(uncertainty: dict[str, Any], path: Path) -> Path:
    """Share of all errors caught when the most uncertain pixels are flagged, against chance."""
    flagged = np.asarray(uncertainty["flagged_share"], dtype=float)
    caught = np.asarray(uncertainty["error_share"], dtype=float)
    count = np.asarray(uncertainty["count"], dtype=float)
    errors = np.asarray(uncertainty["errors"], dtype=float)
    fig = Figure(figsize=(10, 3.8))
    ax_curve, ax_rate = fig.subplots(1, 2)
    ax_curve.plot(flagged, caught, marker=".", markersize=3, label=f"by {uncertainty.get('method', 'entropy')}")
    ax_curve.plot([0, 1], [0, 1], linestyle="--", color="gray", label="random order")
    rate = uncertainty.get("error_rate")
    if rate is not None and np.isfinite(rate) and rate > 0:
        ax_curve.plot([0, rate, 1], [0, 1, 1], linestyle=":", color="tab:green", label="ideal")
    ax_curve.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="share of pixels flagged (most uncertain first)",
                 ylabel="share of all errors among them", title=f"Errors vs uncertainty (AUROC {_num(uncertainty.get('auroc'))})")
    ax_curve.legend(fontsize=8, loc="lower right")
    ax_curve.grid(alpha=0.3)
    centers = (np.arange(len(count)) + 0.5) / len(count)
    filled = count > 0
    ax_rate.plot(centers[filled], errors[filled] / count[filled], marker="o", markersize=3, color="tab:red")
    ax_rate.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="uncertainty (normalised entropy)", ylabel="error rate",
                title="Error rate per uncertainty bin")
    ax_rate.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def draw(metrics: dict[str, Any], plots_dir: Path, attempt: Any) -> None:
    """Both plots through the report's `attempt(key, what, draw)` (a failure becomes a note)."""
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict) and calibration.get("bins"):
        attempt("reliability", "reliability diagram",
                lambda: reliability_diagram(calibration, plots_dir / "reliability.png"))
    uncertainty = metrics.get("uncertainty")
    if isinstance(uncertainty, dict) and uncertainty.get("count"):
        attempt("uncertainty", "error-versus-uncertainty curve",
                lambda: error_uncertainty_curve(uncertainty, plots_dir / "error_vs_uncertainty.png"))


def section(metrics: dict[str, Any] | None, plots: dict[str, Path], embed_png: Any) -> str:
    """HTML of the section (values escaped; plots embedded by the report's `embed_png`)."""
    note = '<p class="note">{}</p>'.format
    if not metrics or "ece" not in metrics:
        return note(escape("No calibration figures yet: `pixelwise evaluate` writes them (ECE, MCE, "
                           "reliability bins and the error-versus-uncertainty curve)."))
    calibration = metrics.get("calibration") or {}
    temperature = calibration.get("temperature")
    rows = [("ECE (15 bins, top-label confidence)", _num(metrics.get("ece"))),
            ("MCE (largest bin gap)", _num(metrics.get("mce"))),
            ("Classwise ECE (mean over classes)", _num(metrics.get("classwise_ece"))),
            ("Temperature", ", ".join(f"{t:.4g}" for t in temperature) if temperature else "none (uncalibrated)")]
    uncertainty = metrics.get("uncertainty") or {}
    if uncertainty:
        rows.append(("Error detection AUROC of entropy", _num(uncertainty.get("auroc"))))
    body = "".join(f"<tr><td>{escape(k)}</td><td class=\"num\">{escape(v)}</td></tr>" for k, v in rows)
    parts = [f'<table id="calibration-table"><thead><tr><th>Score</th><th>Value</th></tr></thead><tbody>{body}</tbody></table>',
             note(escape("A calibrated model's confidence matches its accuracy: bars on the diagonal, ECE near 0. "
                         "`pixelwise calibrate RUN` fits a temperature on the validation split; labels do not change."))]
    if "reliability" in plots:
        parts.append(embed_png(plots["reliability"], "reliability diagram"))
    if "uncertainty" in plots:
        parts.append(note(escape("Pixels sorted by entropy, ignored pixels left out: a curve far above the diagonal "
                                 "means the errors sit where the model is uncertain.")))
        parts.append(embed_png(plots["uncertainty"], "error versus uncertainty curve"))
    return "\n".join(parts)


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    return "n/a" if not np.isfinite(value) else f"{value:.4f}"
