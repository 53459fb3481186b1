"""Synthetic sets: deterministic by seed, exact masks, separate splits, spec options."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as PolyPath

from pixelwise.data import open_dataset
from pixelwise.data.synthetic import SHAPE_CLASSES, WAFER_PATTERNS, render_shapes, render_wafer
from pixelwise.errors import ConfigError


def test_shapes_deterministic_by_seed_and_index_only():
    a = open_dataset("synthetic:shapes?n=10&size=96&seed=3", "train")
    b = open_dataset("synthetic:shapes?n=50&size=96&seed=3", "train")
    for i in (0, 7):
        ia, ma = a.read_raw(i)
        ib, mb = b.read_raw(i)
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    other = open_dataset("synthetic:shapes?n=10&size=96&seed=4", "train")
    assert not np.array_equal(a.read_raw(0)[0], other.read_raw(0)[0])
    val = open_dataset("synthetic:shapes?n=10&size=96&seed=3", "val")
    assert not np.array_equal(a.read_raw(0)[0], val.read_raw(0)[0])  # splits use different seeds
    assert len(a) == 10 and len(val) == 100  # n_val default


def _segment_distance(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((px - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(px - (a + t[:, None] * ab), axis=1)


def _analytic(spec, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent geometry: (inside, uncertain) per pixel centre, uncertain = within 1.5 px of the edge."""
    yy, xx = np.mgrid[0:size, 0:size]
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    cx, cy = spec.center
    if spec.kind == "circle":
        d = np.hypot(pts[:, 0] - round(cx), pts[:, 1] - round(cy))
        r = round(spec.radius)
        return (d <= r).reshape(size, size), (np.abs(d - r) < 1.5).reshape(size, size)
    n, offset, radii = {"square": (4, np.pi / 4, [1.0]), "triangle": (3, 0.0, [1.0]),
                        "star": (10, 0.0, [1.0, 0.5])}[spec.kind]
    t = spec.angle + offset + np.arange(n) * 2 * np.pi / n
    rr = np.array([radii[k % len(radii)] for k in range(n)]) * spec.radius
    verts = np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1)
    inside = PolyPath(verts).contains_points(pts)
    dist = np.min([_segment_distance(pts, verts[k], verts[(k + 1) % n]) for k in range(n)], axis=0)
    return inside.reshape(size, size), (dist < 1.5).reshape(size, size)


@pytest.mark.parametrize("index", range(6))
def test_shapes_masks_are_exact_last_drawn_on_top(index):
    size = 96
    image, mask, specs = render_shapes(11, index, size)
    expected = np.zeros((size, size), np.int64)
    uncertain = np.zeros((size, size), bool)
    top_color = np.full((size, size, 3), -1, np.int64)
    for spec in specs:
        inside, edge = _analytic(spec, size)
        covered = inside | edge
        expected[inside] = spec.class_id
        top_color[inside] = spec.color
        uncertain = np.where(covered, edge, uncertain)  # a later shape decides these pixels again
    certain = ~uncertain
    assert certain.mean() > 0.8
    assert np.array_equal(mask[certain], expected[certain])
    on_shape = certain & (expected > 0)
    assert np.array_equal(image[on_shape], top_color[on_shape])  # image and mask from the same pixels
    assert {s.kind for s in specs} <= set(SHAPE_CLASSES[1:])
    assert set(np.unique(mask)) <= set(range(len(SHAPE_CLASSES)))


def test_wafer_is_multilabel_with_exact_pattern_masks():
    size = 64
    seen = set()
    for i in range(40):
        image, masks, chosen = render_wafer(5, i, size)
        assert image.shape == (size, size, 1) and masks.shape == (size, size, len(WAFER_PATTERNS))
        seen.update(chosen)
        fail = image[..., 0] == 255
        assert (masks.max(axis=2) <= fail).all()  # every pattern die is a failing die on the map
        assert (masks[image[..., 0] == 0] == 0).all()  # off-wafer: background in every mask
        for k, name in enumerate(WAFER_PATTERNS):
            assert (masks[..., k].any()) <= (name in chosen)
        if "Center" in chosen:
            yy, xx = np.nonzero(masks[..., WAFER_PATTERNS.index("Center")])
            r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2) / (size / 2)
            assert r.max() < 0.36
        if "Edge-Ring" in chosen:
            yy, xx = np.nonzero(masks[..., WAFER_PATTERNS.index("Edge-Ring")])
            r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2) / (size / 2)
            assert r.min() > 0.8
    assert len(seen) >= 6
    ds = open_dataset("synthetic:wafer?n=4", "train")
    image, target = ds[0]
    assert ds.task.kind == "multilabel" and target.shape == (8, 64, 64) and image.shape == (1, 64, 64)
    overlap = max((render_wafer(0, i, 64)[1].sum(axis=2) > 1).sum() for i in range(30))
    assert overlap > 0  # patterns really overlap on some wafers


def test_spec_options_are_validated():
    with pytest.raises(ConfigError, match="accepted: n, n_val"):
        open_dataset("synthetic:shapes?bogus=1", "train")
    with pytest.raises(ConfigError, match="available: shapes, wafer"):
        open_dataset("synthetic:cats", "train")
    with pytest.raises(ConfigError, match="integer"):
        open_dataset("synthetic:shapes?n=many", "train")
    ds = open_dataset("synthetic:shapes?n=3&size=40", "test")
    assert ds.read_raw(0)[0].shape == (40, 40, 3) and ds.classes.colors[0] == (0, 0, 0)
