"""Joint transforms, normalisation, mean/std cache and the DataLoader set-up."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data import SegmentationDataset, build_loader, build_transforms, dataset_mean_std, open_dataset
from pixelwise.data.synthetic import shapes_classes
from pixelwise.errors import ConfigError

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


def _label_image(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((h, w), np.uint8)
    mask[5:30, 8:40] = 1
    mask[20:45, 30:60] = 3
    mask[:10, 50:] = 4
    return PALETTE[mask], mask


def test_train_transform_keeps_image_and_mask_aligned_with_nearest_masks():
    image, mask = _label_image()
    t = build_transforms(True, crop_size=40, ignore_index=255, color_jitter=0, blur=0, rotate=15)
    t.set_random_seed(0)
    for _ in range(20):
        x, y = t(image, mask)
        assert x.shape == (3, 40, 40) and y.shape == (40, 40) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= {0, 1, 3, 4, 255}  # nearest: no invented ids
        rgb = (x.permute(1, 2, 0).numpy() * 255).round()
        nearest = np.abs(rgb[:, :, None, :] - PALETTE[None, None].astype(float)).sum(-1).argmin(-1)
        labelled = y.numpy() != 255
        agree = (nearest[labelled] == y.numpy()[labelled]).mean() if labelled.any() else 1.0
        assert agree > 0.9  # only bilinear image edges may disagree


def test_padding_is_ignore_in_mask_and_zero_in_image():
    image, mask = _label_image(20, 24)
    t = build_transforms(True, crop_size=64, scale=(1.0, 1.0), rotate=0, color_jitter=0, blur=0, hflip=False)
    x, y = t(image, mask)
    assert x.shape == (3, 64, 64)
    assert (y == 255).sum() == 64 * 64 - 20 * 24
    assert float(x[:, y == 255].abs().max()) == 0.0
    assert np.array_equal(np.sort(y[y != 255].numpy()), np.sort(mask.ravel()))


def test_eval_transform_normalises_only_and_pads_to_multiple():
    image, mask = _label_image(50, 70)
    mean, std = [0.2, 0.3, 0.4], [0.5, 0.25, 0.1]
    x, y = build_transforms(False, mean=mean, std=std)(image, mask)
    assert x.shape == (3, 50, 70) and torch.equal(y, torch.from_numpy(mask).long())
    expected = (image.astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
    assert np.allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    x, y = build_transforms(False, mean=mean, std=std, pad_multiple=32)(image, mask)
    assert x.shape == (3, 64, 96)
    assert torch.equal(y[:50, :70], torch.from_numpy(mask).long()) and (y[50:] == 255).all() and (y[:, 70:] == 255).all()


def test_uint16_multichannel_and_multilabel_targets():
    img = (np.arange(5 * 6 * 4, dtype=np.uint16).reshape(5, 6, 4) * 500)
    ml = np.zeros((5, 6, 2), np.uint8)
    ml[1:3, :, 1] = 1
    x, y = build_transforms(False, mean=[0.0], std=[1.0])(img, ml)
    assert x.shape == (4, 5, 6) and np.allclose(x.permute(1, 2, 0).numpy(), img / 65535.0, atol=1e-6)
    assert y.dtype == torch.float32 and y.shape == (2, 5, 6) and y[1, 1:3].eq(1).all() and y[0].eq(0).all()
    x, y = build_transforms(True, crop_size=8, ignore_index=255)(img, ml)  # colour ops skip 4 channels
    assert x.shape == (4, 8, 8) and set(y.unique().tolist()) <= {0.0, 1.0, 255.0}
    with pytest.raises(ConfigError, match="3 values but the images have 4 channels"):
        build_transforms(False, mean=[0.1, 0.2, 0.3], std=[1, 1, 1])(img, ml)


def _repeated_dataset(n: int = 8) -> SegmentationDataset:
    from pixelwise.data.layouts import Sample
    from pixelwise.data.synthetic import render_shapes

    image, mask, _ = render_shapes(0, 0, 64)
    samples = [Sample(f"s{i}", None, None) for i in range(n)]
    transform = build_transforms(True, crop_size=32, mean=[0.5], std=[0.25])
    return SegmentationDataset(samples, shapes_classes(), None, transform, generator=lambda i: (image, mask))


def _epoch(loader) -> list[torch.Tensor]:
    return [x for x, _ in loader]


def test_loader_batches_are_seeded_and_workers_augment_differently():
    ds = _repeated_dataset()
    a = _epoch(build_loader(ds, 1, train=True, num_workers=2, seed=5))
    b = _epoch(build_loader(ds, 1, train=True, num_workers=2, seed=5))
    assert all(torch.equal(p, q) for p, q in zip(a, b))  # reproducible
    # the same image through the same pipeline: every worker must draw its own augmentations
    assert len({p.numpy().tobytes() for p in a}) == len(a)
    loader = build_loader(ds, 3, train=True, num_workers=0, seed=1)
    batches = _epoch(loader)
    assert len(batches) == 2 and batches[0].shape == (3, 3, 32, 32)  # drop_last in training
    eval_loader = build_loader(open_dataset("synthetic:shapes?n=5&n_val=5&size=32", "val"), 2, train=False,
                               num_workers=0)
    assert [x.shape[0] for x, _ in eval_loader] == [2, 2, 1]


def test_mean_std_is_right_and_cached_next_to_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        img = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
        images.append(img)
        (tmp_path / "d" / "images" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / "masks" / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "d" / "images" / "train" / f"{i}.png")
        Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / "d" / "masks" / "train" / f"{i}.png")
    (tmp_path / "d" / "masks" / "train" / "0.png").write_bytes(
        (tmp_path / "d" / "masks" / "train" / "1.png").read_bytes())
    all_px = np.concatenate([im.reshape(-1, 3) for im in images]) / 255.0
    mean, std = dataset_mean_std(tmp_path / "d")
    assert np.allclose(mean, all_px.mean(0), atol=1e-5) and np.allclose(std, all_px.std(0), atol=1e-5)
    cache = tmp_path / "d" / ".pixelwise-cache.json"
    data = json.loads(cache.read_text())
    (key,) = data
    data[key]["mean"] = [9.0, 9.0, 9.0]
    cache.write_text(json.dumps(data))
    assert dataset_mean_std(tmp_path / "d")[0] == [9.0, 9.0, 9.0]  # read back, not recomputed

    import pixelwise.data.normalization as norm

    real_store = norm._store
    monkeypatch.setattr(norm, "_store", lambda path, d: False if path == cache else real_store(path, d))
    cache.unlink()
    mean2, _ = dataset_mean_std(tmp_path / "d")  # data folder "read-only": user cache instead
    assert np.allclose(mean2, mean) and (tmp_path / "cache" / "pixelwise" / "mean_std.json").is_file()


def test_mean_std_of_a_subset_uses_only_its_images(tmp_path, monkeypatch):
    from torch.utils.data import Subset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = open_dataset("synthetic:shapes?n=6&size=24&seed=9", "train")
    px = np.concatenate([ds.read_image(i).reshape(-1, 3) for i in (1, 4)]) / 255.0
    mean, std = dataset_mean_std(Subset(ds, [1, 4]))
    assert np.allclose(mean, px.mean(0), atol=1e-5) and np.allclose(std, px.std(0), atol=1e-5)
    full_mean, _ = dataset_mean_std(ds)
    assert not np.allclose(full_mean, mean)  # not served from the full set's cache entry
