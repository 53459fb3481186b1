"""Predictor: checkpoint loading, preprocessing, decoding per task, batches, sizes, tiling fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelwise.errors import CheckpointError, DataError
from pixelwise.inference import Prediction, Predictor, Preprocessing
from pixelwise.models import create_model
from pixelwise.tasks import Task
from pixelwise.checkpoint import save_checkpoint

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def make_checkpoint(path, task: Task, in_channels: int = 3, seed: int = 0, name: str = "unet", **kwargs):
    torch.manual_seed(seed)
    kwargs = kwargs or {"base_channels": 8, "depth": 3}
    model_kwargs = {"num_classes": task.out_channels, "in_channels": in_channels, **kwargs}
    model = create_model(name, **model_kwargs).eval()
    names = ["background", "foreground"] if task.kind == "binary" else [f"c{i}" for i in range(task.num_classes)]
    save_checkpoint(path, {
        "model": {"name": name, "kwargs": model_kwargs},
        "task": task.to_dict(),
        "classes": {"names": names, "colors": [[40 * i, 255 - 40 * i, 7 * i] for i in range(len(names))],
                    "ignore_index": 255},
        "preprocess": {"mean": MEAN[:in_channels], "std": STD[:in_channels], "in_channels": in_channels,
                       "crop_size": None},
        "state_dict": model.state_dict(),
    })
    return model


def reference_logits(model, image: np.ndarray, mean=MEAN, std=STD) -> torch.Tensor:
    """Independent preprocessing: scale to 0..1, subtract mean, divide by std."""
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1) / 255.0
    x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    with torch.no_grad():
        return model(x[None])


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_multiclass_prediction_matches_model_with_checkpoint_normalisation(tmp_path, rgb):
    task = Task("multiclass", num_classes=5)
    model = make_checkpoint(tmp_path / "m.pt", task)
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    pred = predictor.predict(rgb, return_probabilities=True)
    logits = reference_logits(model, rgb)
    assert isinstance(pred, Prediction)
    assert pred.labels.shape == (37, 53) and pred.labels.dtype == np.uint8
    assert (pred.labels == logits.argmax(1)[0].numpy()).all()
    np.testing.assert_allclose(pred.probabilities, torch.softmax(logits, 1)[0].numpy(), atol=1e-5)
    assert predictor.class_names == [f"c{i}" for i in range(5)] and predictor.colors[1] == (40, 215, 7)
    assert predictor.predict(rgb).probabilities is None


def test_binary_and_multilabel_decoding(tmp_path, rgb):
    binary_model = make_checkpoint(tmp_path / "b.pt", Task("binary", threshold=0.3))
    pred = Predictor.from_checkpoint(tmp_path / "b.pt", device="cpu", precision="fp32").predict(rgb, return_probabilities=True)
    probs = torch.sigmoid(reference_logits(binary_model, rgb))[0].numpy()
    assert pred.probabilities.shape == (1, 37, 53)
    assert (pred.labels == (probs[0] > 0.3)).all()

    ml_task = Task("multilabel", num_classes=3, threshold=(0.5, 0.45, 0.55))
    ml_model = make_checkpoint(tmp_path / "ml.pt", ml_task)
    pred = Predictor.from_checkpoint(tmp_path / "ml.pt", device="cpu", precision="fp32").predict(rgb)
    probs = torch.sigmoid(reference_logits(ml_model, rgb))[0].numpy()
    assert pred.labels.shape == (3, 37, 53)
    assert (pred.labels == (probs > np.array([0.5, 0.45, 0.55])[:, None, None])).all()


def test_any_size_and_aspect(tmp_path):
    task = Task("multiclass", num_classes=3)
    model = make_checkpoint(tmp_path / "m.pt", task)
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    for h, w in [(1, 1), (7, 200), (131, 9), (64, 64)]:
        img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
        labels = predictor.predict(img).labels
        assert labels.shape == (h, w)
        assert (labels == reference_logits(model, img).argmax(1)[0].numpy()).all()


def test_batch_of_mixed_sizes_keeps_order_and_equals_single(tmp_path):
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=4))
    # batch_size 4, but at most 2 images of 20x30 fit under max_pixels.
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32", batch_size=4,
                                          max_pixels=2 * 20 * 30)
    seen = []
    inner = predictor.model_fn
    predictor.model_fn = lambda x: seen.append(tuple(x.shape)) or inner(x)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(20, 30, 3), (16, 16, 3), (20, 30, 3), (20, 30, 3)]]
    batch = predictor.predict(images)
    assert isinstance(batch, list) and len(batch) == 4
    assert sorted(seen) == [(1, 3, 16, 16), (1, 3, 20, 30), (2, 3, 20, 30)]
    for img, pred in zip(images, batch):
        assert (pred.labels == predictor.predict(img).labels).all()


def test_channel_handling_gray_to_rgb_alpha_and_rgb_to_gray(tmp_path):
    model = make_checkpoint(tmp_path / "rgb.pt", Task("multiclass", num_classes=3))
    predictor = Predictor.from_checkpoint(tmp_path / "rgb.pt", device="cpu", precision="fp32")
    gray = np.random.default_rng(1).integers(0, 256, (24, 24, 1), dtype=np.uint8)
    expected = reference_logits(model, np.repeat(gray, 3, axis=2)).argmax(1)[0].numpy()
    assert (predictor.predict(gray).labels == expected).all()
    assert (predictor.predict(gray[..., 0]).labels == expected).all()  # plain (H, W)
    rgba = np.concatenate([np.repeat(gray, 3, axis=2), np.full_like(gray, 7)], axis=2)
    assert (predictor.predict(rgba).labels == expected).all()  # alpha dropped

    pre = Preprocessing([0.5], [0.5], in_channels=1)
    rgb = np.array([[[255, 0, 0], [0, 255, 0]]], dtype=np.uint8)
    assert pre.channels(rgb)[..., 0].tolist() == [[76, 150]]  # BT.601 luma: 0.299*255, 0.587*255
    with pytest.raises(DataError, match="5 channels"):
        predictor.predict(np.zeros((4, 4, 5), np.uint8))


def test_uint16_images_scale_to_the_same_input(tmp_path):
    make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=3))
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32")
    img8 = np.random.default_rng(2).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    img16 = img8.astype(np.uint16) * 257  # 255 -> 65535: the same intensities
    assert (predictor.predict(img16).labels == predictor.predict(img8).labels).all()


def test_large_image_falls_back_to_tiling(tmp_path):
    model = make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=3))
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32",
                                          max_pixels=64 * 64, tile=64, overlap=32)
    seen = []
    inner = predictor.model_fn
    predictor.model_fn = lambda x: seen.append(tuple(x.shape)) or inner(x)
    img = np.random.default_rng(4).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    pred = predictor.predict(img, return_probabilities=True)
    assert seen and all(s[2:] == (64, 64) for s in seen)  # never the whole image at once
    assert pred.labels.shape == (100, 150) and pred.probabilities.shape == (3, 100, 150)
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)
    # A U-Net sees far beyond the tile margin, so tiles differ a little from one pass; most agree.
    whole = reference_logits(model, img).argmax(1)[0].numpy()
    assert (pred.labels == whole).mean() > 0.8
    seen.clear()
    assert (predictor.predict(img, tiled=False).labels == whole).all() and seen[0][2:] == (100, 150)


def test_tta_option_runs_flipped_views(tmp_path, rgb):
    model = make_checkpoint(tmp_path / "m.pt", Task("multiclass", num_classes=3))
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", precision="fp32", tta="hflip")
    probs = predictor.predict(rgb, return_probabilities=True).probabilities
    p1 = torch.softmax(reference_logits(model, rgb), 1)[0]
    p2 = torch.softmax(reference_logits(model, rgb[:, ::-1].copy()), 1)[0].flip(-1)
    np.testing.assert_allclose(probs, ((p1 + p2) / 2).numpy(), atol=1e-5)


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        Predictor.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        Predictor.from_checkpoint(bad)


# ----------------------------------------------------------------- visualize (used by predict)
def test_visualize_colorize_overlay_error_map_by_hand(tmp_path):
    from PIL import Image

    from pixelwise.visualize import add_legend, colorize, error_map, overlay, save_label_png

    colors = [(10, 20, 30), (200, 100, 0)]
    labels = np.array([[0, 1], [255, 1]])
    assert colorize(labels, colors).tolist() == [[[10, 20, 30], [200, 100, 0]], [[0, 0, 0], [200, 100, 0]]]
    image = np.full((2, 2, 3), 100, np.uint8)
    # 0.5 * 100 + 0.5 * colour; the ignored pixel keeps the image.
    assert overlay(image, labels, colors).tolist() == [[[55, 60, 65], [150, 100, 50]], [[100, 100, 100], [150, 100, 50]]]
    em = error_map(np.array([[0, 0], [1, 1]]), labels, ignore_index=255)
    assert em[0, 0].tolist() == [0, 160, 0] and em[0, 1].tolist() == [255, 0, 0] and em[1, 0].tolist() == [96, 96, 96]
    save_label_png(tmp_path / "l.png", labels, colors)
    img = Image.open(tmp_path / "l.png")
    assert img.mode == "P" and np.asarray(img).tolist() == [[0, 1], [255, 1]]
    assert img.getpalette()[:6] == [10, 20, 30, 200, 100, 0]
    legend = add_legend(np.zeros((40, 50, 3), np.uint8), ["road", "sky"], colors)
    assert legend.shape[0] == 40 and legend.shape[1] > 50
    assert (legend[:, 50:] == colors[1]).all(axis=-1).any()  # a swatch in the class colour


def test_visualize_multilabel_overlay_mixes_colours():
    from pixelwise.visualize import colorize_multilabel

    masks = np.zeros((2, 1, 3), np.uint8)
    masks[0, 0, 0] = masks[1, 0, 1] = 1
    masks[:, 0, 2] = 1
    out = colorize_multilabel(masks, [(200, 0, 0), (0, 100, 50)])
    assert out[0].tolist() == [[200, 0, 0], [0, 100, 50], [100, 50, 25]]
