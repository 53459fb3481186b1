"""The README's one-call Python API example, run as written, on its tiny synthetic set: a
planned run with a 15-second training budget finishes within its budget plus a stated margin,
and evaluate/predict agree with what the run recorded."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# What a planned run may take beyond its budget: starting the model and data, the first
# epoch the trainer needs to measure before it can shorten the run, scoring the test split
# and writing the report, on a contended 2-core machine.
MARGIN_SECONDS = 40.0


def readme_block(marker: str) -> str:
    """The README's ```python block that contains `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"expected one README python block with {marker!r}"
    return found[0]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_python_api_example_runs_within_its_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIXELWISE_HOME", str(tmp_path / "home"))
    code = readme_block("pixelwise.train(")
    budget = float(re.search(r"minutes=([0-9.]+)", code).group(1)) * 60
    namespace: dict = {}
    started = time.perf_counter()
    exec(compile(code, "README.md", "exec"), namespace)
    wall = time.perf_counter() - started
    run, scores, labels, maps = (namespace[k] for k in ("run", "scores", "labels", "label_maps"))

    print(f"planned run: {run.wall_seconds:.1f} s for a {budget:.0f} s budget "
          f"({run.config.train.epochs} epochs planned, {run.summary['epochs_run']} run)")
    assert run.summary["finished"] and run.wall_seconds <= budget + MARGIN_SECONDS, run.wall_seconds
    assert wall <= budget + MARGIN_SECONDS + 30  # the example's evaluate and predict calls on top
    # The plan is recorded, with a reason per key, in the run's config.yaml.
    recorded = yaml.safe_load((run.path / "config.yaml").read_text())
    assert recorded["plan"]["reasons"]["model.name"] and recorded["model"]["name"] == run.plan.values["model.name"]
    assert set(run.plan.values) <= set(recorded["plan"]["reasons"])
    # evaluate() scores the same checkpoint on the same split as the run's own test step.
    assert scores["miou"] == pytest.approx(run.metrics["miou"], abs=1e-6)
    assert labels.shape == (48, 48) and labels.dtype == np.uint8 and labels.max() < 5
    assert len(maps) == 2 and np.array_equal(maps[0], labels)
    predictor = namespace["predictor"]
    assert np.array_equal(predictor.predict(np.zeros((48, 48, 3), np.uint8)).labels, labels)

    # Planned once: resuming reads config.yaml's plan and plans nothing.
    from pixelwise.planning import plan_config
    from pixelwise.training.config import read_config

    again, plan = plan_config(read_config(run.path / "config.yaml"), say=lambda line: None)
    assert plan is None and again.to_dict() == run.config.to_dict()


def test_api_keyword_overrides_map_to_recipe_keys():
    from pixelwise.api import _dotted
    from pixelwise.errors import ConfigError

    assert _dotted({"epochs": 3, "lr": 0.01, "crop_size": 64, "train.loss": "ce"}) == {
        "train.epochs": 3, "optim.lr": 0.01, "data.crop_size": 64, "train.loss": "ce"}
    with pytest.raises(ConfigError, match="no config section"):
        _dotted({"epochz": 3})
    with pytest.raises(ConfigError, match="more than one"):
        _dotted({"name": "x"})  # model.name and optim.name and schedule.name
