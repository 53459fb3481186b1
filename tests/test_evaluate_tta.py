"""`evaluate --tta` scores the same labels the Predictor's TTA produces (an independent path)."""

from __future__ import annotations

import numpy as np
import torch

from pixelwise.data import open_dataset
from pixelwise.inference import Predictor
from pixelwise.metrics import ConfusionMatrix
from pixelwise.models import create_model
from pixelwise.checkpoint import save_checkpoint
from pixelwise.training.evaluation import evaluate_checkpoint

DATA = "synthetic:shapes?n=4&n_val=4&n_test=3&size=40"
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet", num_classes=5, base_channels=8, depth=2, batch_norm=False)
    # Random weights are asymmetric, so hflip TTA really changes the logits; scaling them up
    # spreads the logits so the argmax varies across pixels.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {
        "model": {"name": "unet", "kwargs": {"num_classes": 5, "base_channels": 8, "depth": 2, "batch_norm": False}},
        "task": {"kind": "multiclass", "num_classes": 5, "ignore_index": 255, "threshold": 0.5},
        "classes": {"names": [f"c{i}" for i in range(5)], "colors": [[i * 40, 0, 0] for i in range(5)],
                    "ignore_index": 255},
        "preprocess": {"mean": MEAN, "std": STD, "in_channels": 3},
        "state_dict": model.state_dict(),
    })
    return path


def test_evaluate_with_tta_matches_predictor_tta(tmp_path):
    path = _checkpoint(tmp_path)
    plain = evaluate_checkpoint(path, data=DATA, split="test", out_dir=tmp_path / "plain", amp="off",
                                device="cpu", n_resamples=10, verbose=False)
    flipped = evaluate_checkpoint(path, data=DATA, split="test", out_dir=tmp_path / "tta", amp="off",
                                  device="cpu", n_resamples=10, verbose=False, tta="hflip")

    predictor = Predictor.from_checkpoint(path, device="cpu", precision="fp32", tta="hflip")
    dataset = open_dataset(DATA, "test")
    expected = ConfusionMatrix(5, ignore_index=255)
    for i in range(len(dataset)):
        image, mask = dataset.read_raw(i)
        expected.update(predictor.predict(image).labels.astype(np.int64), mask.astype(np.int64))

    np.testing.assert_array_equal(np.asarray(flipped["confusion_matrix"]), expected.matrix.numpy())
    assert flipped["tta"] == "hflip"
    # The views do change the result here, so the test would notice TTA being ignored.
    assert np.asarray(plain["confusion_matrix"]).tolist() != np.asarray(flipped["confusion_matrix"]).tolist()
