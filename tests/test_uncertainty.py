"""Uncertainty formulas (hand-computed), the error-by-uncertainty bins (scikit-learn's AUROC as
oracle), and the report's calibration section on a fake run folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pixelwise.inference.uncertainty import (
    bernoulli_entropy,
    bernoulli_margin,
    image_score,
    softmax_entropy,
    softmax_margin,
    to_png16,
    tta_variance,
    uncertainty_map,
)
from pixelwise.metrics.calibration import ErrorByUncertainty


def _pixels(*columns: list[float]) -> torch.Tensor:
    """(K, 1, P) probabilities: one column per pixel."""
    return torch.tensor(columns, dtype=torch.float32).T[:, None, :]


@pytest.mark.parametrize("probs, expected", [
    ([0.25, 0.25, 0.25, 0.25], 1.0),        # uniform over 4: the maximum
    ([1.0, 0.0, 0.0, 0.0], 0.0),            # certain
    ([0.5, 0.5, 0.0, 0.0], 0.5),            # ln 2 / ln 4
    ([0.7, 0.1, 0.1, 0.1], (-(0.7 * math.log(0.7)) - 3 * 0.1 * math.log(0.1)) / math.log(4)),
])
def test_softmax_entropy_table(probs, expected):
    assert float(softmax_entropy(_pixels(probs))[0, 0]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("p, entropy, margin", [
    (0.5, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0),
    (0.25, 0.811278, 0.5),   # -(.25 log2 .25 + .75 log2 .75); 1 - |.5 - 1|
    (0.8, 0.721928, 0.4),
])
def test_bernoulli_table(p, entropy, margin):
    t = torch.tensor([p])
    assert float(bernoulli_entropy(t)) == pytest.approx(entropy, abs=1e-6)
    assert float(bernoulli_margin(t)) == pytest.approx(margin, abs=1e-6)


def test_margin_and_maps_per_task():
    probs = _pixels([0.6, 0.3, 0.1], [0.4, 0.4, 0.2])
    assert softmax_margin(probs)[0].tolist() == pytest.approx([0.7, 1.0])
    assert uncertainty_map(probs, "multiclass", "margin").shape == (1, 2)
    # Multilabel: channel entropies 1 (p=.5) and 0 (p=1) -> mean .5, or kept per class.
    ml = torch.tensor([[[0.5]], [[1.0]]])
    assert float(uncertainty_map(ml, "multilabel")) == pytest.approx(0.5)
    assert uncertainty_map(ml, "multilabel", reduce="none")[:, 0, 0].tolist() == pytest.approx([1.0, 0.0])
    # Binary: the one foreground channel.
    assert float(uncertainty_map(torch.tensor([[[0.25]]]), "binary")) == pytest.approx(0.811278, abs=1e-6)


def test_tta_variance_and_scores():
    views = torch.tensor([[[[0.0]]], [[[1.0]]]])          # (V=2, K=1, 1, 1): variance .25, the maximum
    assert float(tta_variance(views)) == pytest.approx(1.0)
    views = torch.tensor([[[[0.2]], [[0.9]]], [[[0.4]], [[0.9]]]])  # channel 0 var .01, channel 1 var 0
    assert float(tta_variance(views)) == pytest.approx(4 * 0.01 / 2)
    assert float(tta_variance(views[:1])) == 0.0
    assert image_score(torch.tensor([[0.0, 1.0], [0.5, 0.5]])) == pytest.approx(0.5)
    assert to_png16(torch.tensor([[0.0, 1.0, 0.5]])).tolist() == [[0, 65535, 32768]]


def test_error_by_uncertainty_matches_sklearn_auroc():
    from sklearn.metrics import roc_auc_score

    gen = torch.Generator().manual_seed(0)
    u = torch.rand(4000, generator=gen)
    error = torch.rand(4000, generator=gen) < u * 0.6   # errors likelier where uncertain
    acc = ErrorByUncertainty(n_bins=20)
    acc.update(u[:1000], error[:1000])
    acc.update(u[1000:], error[1000:])
    binned = torch.clamp((u * 20).long(), max=19).numpy()  # ties within a bin, as the accumulator sees them
    assert acc.auroc() == pytest.approx(roc_auc_score(error.numpy(), binned), abs=1e-9)
    s = acc.summary()
    assert s["pixels"] == 4000 and s["error_rate"] == pytest.approx(float(error.float().mean()))
    assert s["flagged_share"][0] == 0 and s["flagged_share"][-1] == pytest.approx(1.0)
    assert s["error_share"][-1] == pytest.approx(1.0)
    # Flagging the top 20% most uncertain pixels catches more than 20% of the errors here.
    i = int(np.searchsorted(s["flagged_share"], 0.2))
    assert s["error_share"][i] > s["flagged_share"][i] + 0.05


def test_report_shows_calibration_section(tmp_path):
    from pixelwise.metrics.calibration import CalibrationAccumulator
    from pixelwise.report import write_report
    from pixelwise.tasks import Task
    from test_report import make_run

    run = make_run(tmp_path, with_gallery=False)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    gen = torch.Generator().manual_seed(0)
    cal = CalibrationAccumulator(Task("multiclass", 4))
    cal.update(torch.randn(2, 4, 8, 8, generator=gen) * 3, torch.randint(0, 4, (2, 8, 8), generator=gen))
    errs = ErrorByUncertainty()
    errs.update(torch.rand(500, generator=gen), torch.rand(500, generator=gen) < 0.3)
    summary = {**cal.summary(), "temperature": [1.75]}
    metrics.update({"ece": summary["ece"], "mce": summary["mce"], "classwise_ece": summary["classwise_ece"],
                    "calibration": summary, "uncertainty": {"method": "entropy", **errs.summary()}})
    from pixelwise.metrics import jsonable

    (run / "eval" / "metrics.json").write_text(json.dumps(jsonable(metrics)))
    page = write_report(run).read_text()
    assert 'id="calibration-table"' in page
    assert f"{summary['ece']:.4f}" in page and "1.75" in page
    assert (run / "plots" / "reliability.png").is_file() and (run / "plots" / "error_vs_uncertainty.png").is_file()
    assert 'alt="reliability diagram"' in page and 'alt="error versus uncertainty curve"' in page


def test_report_without_calibration_says_how_to_get_it(tmp_path):
    from pixelwise.report import write_report
    from test_report import make_run

    page = write_report(make_run(tmp_path, with_gallery=False)).read_text()
    assert "No calibration figures yet" in page
