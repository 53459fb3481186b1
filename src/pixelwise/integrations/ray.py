"""Batch prediction on Ray Data: the same outputs as `pixelwise predict`, on a cluster.

    import ray
    from pixelwise.integrations.ray import PredictWriter, predict_dataset

    ray.init()                                   # or ray.init(address="auto") on a cluster
    paths = ray.data.from_items([{"path": p, "name": n} for p, n in ...])
    rows = predict_dataset(paths, "best.pt", "s3-mounted/out", workers=8).take_all()

Design: `map_batches` runs over *paths*, not pixels. An actor class (`PredictWriter`) loads
the model once per worker, reads each image itself, predicts, writes the label map and overlay
into the output folder itself (atomically, with the same done markers as the CLI), and returns
only the path, size and class shares. Images of different sizes cannot be stacked into one
tensor, and label maps have no business travelling through the object store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


class PredictWriter:
    """Ray Data actor: a batch of {"path", "name"} -> a batch of {"path", "width", "height", "shares", "error"}."""

    def __init__(self, model: str, out: str, resume: bool = False, probs: str | None = None,
                 overlays: bool = True, alpha: float = 0.5, **predictor_options: Any) -> None:
        import torch

        from pixelwise.inference.predictor import Predictor

        torch.set_num_threads(max(1, int(predictor_options.pop("threads", 1))))
        self.predictor = Predictor.load(model, **predictor_options)
        self.out, self.resume, self.probs, self.overlays, self.alpha = Path(out), resume, probs, overlays, alpha
        for sub in ("labels", "overlays" if overlays else None, "probs" if probs else None):
            if sub:
                (self.out / sub).mkdir(parents=True, exist_ok=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pixelwise.data.io import read_image
        from pixelwise.errors import DataError
        from pixelwise.inference.outputs import write_prediction
        from pixelwise.inference.sharding import is_done, mark_done, marker_path

        rows: dict[str, list] = {"path": [], "width": [], "height": [], "shares": [], "error": []}
        for path, name in zip(batch["path"], batch["name"]):
            path, name = str(path), str(name)
            width = height = 0
            shares: list[float] = []
            error = ""
            if self.resume and is_done(self.out, name):
                import json

                done = json.loads(marker_path(self.out, name).read_text())
                width, height, shares = done["width"], done["height"], done["shares"]
            else:
                try:
                    image = read_image(path)
                    self.predictor.preprocess.channels(image[:1, :1], path)
                    pred = self.predictor.predict(image, return_probabilities=self.probs is not None)
                    write_prediction(self.predictor, self.out, name, image, pred, self.probs, self.overlays, self.alpha)
                    height, width = image.shape[:2]
                    shares = [float(v) for v in self.predictor.class_shares(pred.labels)]
                    mark_done(self.out, name, {"image": Path(path).as_posix(), "width": int(width),
                                               "height": int(height), "shares": shares})
                except DataError as exc:  # one bad file: listed, the batch goes on
                    error = exc.problem
            rows["path"].append(path)
            rows["width"].append(int(width))
            rows["height"].append(int(height))
            rows["shares"].append(np.asarray(shares, dtype=np.float64))
            rows["error"].append(error)
        return {key: np.asarray(value, dtype=object) if key == "shares" else np.asarray(value)
                for key, value in rows.items()}


def predict_dataset(dataset, model: str | Path, out: str | Path, *, workers: int = 2, batch_size: int = 8,
                    gpus_per_worker: float = 0, **options: Any):
    """dataset rows {"path", "name"} -> rows {"path", "width", "height", "shares", "error"} (lazy).

    options go to `PredictWriter` (resume, probs, overlays, alpha, threads) and `Predictor.load`
    (device, precision, tta, tile, overlap, ...). gpus_per_worker reserves GPUs per actor.
    """
    extra = {"num_gpus": gpus_per_worker} if gpus_per_worker else {}
    return dataset.map_batches(PredictWriter, fn_constructor_kwargs={"model": str(model), "out": str(out), **options},
                               batch_size=batch_size, concurrency=workers, batch_format="numpy", **extra)


def predict_with_ray(model: str | Path, paths: Sequence[Path], out: str | Path, *, names: Sequence[str],
                     workers: int = 2, batch_size: int = 8, **options: Any):
    """What `pixelwise predict --engine ray` runs: Ray Data over `paths`, report like the local engine."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        from pixelwise.errors import ConfigError

        raise ConfigError("--engine ray needs Ray Data: pip install 'pixelwise[ray]'") from exc
    from pixelwise.inference.outputs import PredictReport

    options = {k: v for k, v in options.items() if v is not None or k == "probs"}
    if not ray.is_initialized():
        ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
    items = [{"path": str(p), "name": n} for p, n in zip(paths, names)]
    rows = predict_dataset(ray.data.from_items(items), model, out, workers=workers, batch_size=batch_size,
                           **options).take_all()
    report = PredictReport()
    for row in rows:
        if row["error"]:
            report.failed.append((Path(row["path"]), str(row["error"])))
        else:
            report.written.append(Path(row["path"]))
    return report


__all__ = ["PredictWriter", "predict_dataset", "predict_with_ray"]
