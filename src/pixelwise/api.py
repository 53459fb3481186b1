"""The one-call Python API, over the same code and checks as the command line.

    import pixelwise
    run = pixelwise.train(data="synthetic:shapes?n=64&size=64", minutes=1, out="runs/shapes")
    run.metrics["miou"]                        # test split (else best validation) scores
    labels = run.predictor().predict(image).labels
    pixelwise.evaluate(run, data="synthetic:shapes?n=64&size=64")["miou"]
    pixelwise.predict(run, [image_a, image_b])  # -> list of label maps

`train` is `pixelwise train DATA --out RUN --minutes N key=value...`: the planner fills every
key not given (`model`, or overrides such as `epochs=5`, `lr=0.01`, `train.loss="ce"`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class Run:
    """A finished (or stopped) training run: its folder, summary, recipe and plan."""

    path: Path
    summary: dict[str, Any]
    config: Any                                     # pixelwise.training.config.Config, plan recorded
    plan: Any = None                                # pixelwise.planning.Plan, None when not planned
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        """checkpoints/best.pt (last.pt when no validation improved)."""
        from pixelwise.checkpoint import resolve_checkpoint

        return resolve_checkpoint(self.path)[0]

    @property
    def metrics(self) -> dict[str, Any]:
        """The test split's scores when it was scored, else the best validation metric."""
        if "test" in self.summary:
            return self.summary["test"]
        return {self.summary["select_metric"].removeprefix("val_"): self.summary["best_metric"]}

    def predictor(self, **options: Any):
        """A `pixelwise.Predictor` on the run's best checkpoint (options: device, precision, tta...)."""
        from pixelwise.inference import Predictor

        return Predictor.from_checkpoint(self.checkpoint, **options)

    def __fspath__(self) -> str:  # a Run goes wherever a run folder path does
        return str(self.path)


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Short names (epochs, lr, crop_size) -> their one section's dotted key; dotted kept."""
    from pixelwise.errors import ConfigError
    from pixelwise.training.config import Config

    sections = {name: info.annotation for name, info in Config.model_fields.items() if name != "plan"}
    out = {}
    for key, value in overrides.items():
        if "." not in key:
            owners = [s for s, model in sections.items() if key in getattr(model, "model_fields", {})]
            if len(owners) != 1:
                raise ConfigError(f"{key}: {'no' if not owners else 'more than one'} config section has this "
                                  f"key; write it dotted (e.g. train.epochs=3)")
            key = f"{owners[0]}.{key}"
        out[key] = value
    return out


def train(data: str | Path, model: str | None = None, minutes: float | None = None,
          out: str | Path | None = None, *, config: str | Path | None = None, test: bool = True,
          verbose: bool = True, **overrides: Any) -> Run:
    """Plan (for `minutes`, default 10) and train on `data`, score the test split, write the
    report; returns the `Run`. Keys in `config` (a YAML recipe), `model` and `overrides` are
    kept; the planner fills the rest."""
    from pixelwise.planning import plan_config
    from pixelwise.training.config import read_config
    from pixelwise.workflows import train_test_report

    started = time.perf_counter()
    raw: dict[str, Any] = read_config(config) if config is not None else {}
    given = _dotted(overrides)
    if model is not None:
        given["model.name"] = model
    for key, value in given.items():
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    cfg, plan = plan_config(raw, data=str(data), minutes=minutes,
                            say=(lambda line: print(line)) if verbose else (lambda line: None))
    if verbose and plan is not None:
        for line in plan.lines():
            print("plan: " + line)
    out = Path(out) if out is not None else Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    summary = train_test_report(cfg, out, verbose=verbose, evaluate_test=test, command="pixelwise.train(...)")
    return Run(path=out, summary=summary, config=cfg, plan=plan, wall_seconds=time.perf_counter() - started)


def evaluate(run_or_checkpoint: Run | str | Path, data: str | Path | None = None, split: str = "test",
             **options: Any) -> dict[str, Any]:
    """Score a run's best checkpoint (or a checkpoint file) on `split` of `data` (default: the
    data it was trained on). The result dict of `pixelwise evaluate --json`."""
    from pixelwise.training.evaluation import evaluate_checkpoint

    options.setdefault("verbose", False)
    return evaluate_checkpoint(Path(run_or_checkpoint), data=None if data is None else str(data), split=split,
                               **options)


def predict(checkpoint_or_run: Run | str | Path, images: Any, **options: Any) -> Any:
    """Label maps for `images`: one image (array or file path) -> one uint8 label map; a list
    of them -> a list. Multilabel gives (C, H, W) 0/1 masks."""
    from pixelwise.checkpoint import resolve_checkpoint
    from pixelwise.data.io import read_image
    from pixelwise.inference import Predictor

    source = checkpoint_or_run.checkpoint if isinstance(checkpoint_or_run, Run) else checkpoint_or_run
    predictor = Predictor.from_checkpoint(resolve_checkpoint(source)[0], **options)

    def load(item: Any) -> np.ndarray:
        return read_image(item) if isinstance(item, (str, Path)) else np.asarray(item)

    single = isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.dtype != object)
    if single:
        return predictor.predict(load(images)).labels
    return [p.labels for p in predictor.predict([load(i) for i in images])]
