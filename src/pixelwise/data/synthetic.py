"""Built-in synthetic data sets: generated on the fly, exact masks, deterministic by seed.

- `shapes` (multiclass): 2-4 overlapping circles, squares, triangles and stars on textured,
  unsaturated backgrounds. The class is the shape kind; each kind has its own hue band and
  neighbouring bands overlap at their edges, so colour usually tells the class and shape
  decides in the overlaps. Later shapes are drawn on top of earlier ones
  and the mask follows exactly (it is written from the same pixel set as the image).
- `wafer` (multilabel): wafer bin maps (one pixel per die: off-wafer 0, pass 128, fail 255)
  with the classic WM-811K defect patterns, several per wafer. Each pattern's mask marks the
  dies that pattern made fail, so patterns overlap and a die can carry two labels: sigmoid
  per class, not softmax. Off-wafer pixels are background (0 in every mask), not ignore:
  the disc edge is trivial to learn and every pixel then has a defined target.

Sample `i` of a split depends only on (seed, split, i), never on how many samples exist.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

from pixelwise.data.classes import ClassTable

SHAPE_KINDS = ("circle", "square", "triangle", "star")
SHAPE_CLASSES = ("background",) + SHAPE_KINDS
SHAPE_COLORS = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25)]
# Hue bands 0.25 apart, each drawn +-0.13: neighbouring bands overlap at their edges, so
# colour usually tells the class (quick to learn) and shape has to decide in the overlaps.
_HUE_CENTER = {"circle": 0.0, "square": 0.25, "triangle": 0.5, "star": 0.75}
_HUE_SPREAD = 0.13
# Circumradius factors that bring the kinds' areas closer (a triangle covers 0.41 r^2, a circle
# 3.14 r^2): without them thin triangles are a rare, slow-to-learn class.
_SIZE_SCALE = {"circle": 0.9, "square": 1.0, "triangle": 1.35, "star": 1.25}

WAFER_PATTERNS = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Random", "Scratch")
WAFER_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                (70, 240, 240), (240, 50, 230)]
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def split_seed(seed: int, split: str) -> int:
    """Train, val and test draw from different seeds, so they never share a sample."""
    if split not in _SPLIT_OFFSET:
        raise KeyError(split)
    return seed + _SPLIT_OFFSET[split]


def shapes_classes() -> ClassTable:
    return ClassTable(list(SHAPE_CLASSES), list(SHAPE_COLORS), 255, "multiclass",
                      source="synthetic:shapes (background + 4 shape kinds)")


def wafer_classes() -> ClassTable:
    return ClassTable(list(WAFER_PATTERNS), list(WAFER_COLORS), 255, "multilabel",
                      source="synthetic:wafer (8 WM-811K defect patterns, multilabel)")


# --------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class ShapeSpec:
    kind: str
    class_id: int
    center: tuple[float, float]   # (x, y) pixels
    radius: float                 # circumradius, pixels
    angle: float                  # radians
    color: tuple[int, int, int]


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted low-frequency colour noise plus fine grain: (size, size, 3) uint8."""
    coarse = rng.uniform(0, 1, (rng.integers(3, 9), rng.integers(3, 9), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(70, 150) + rng.uniform(-15, 15, 3).astype(np.float32)  # a gray with a slight tint
    amp = rng.uniform(20, 60)
    grain = rng.normal(0, rng.uniform(3, 12), (size, size, 1)).astype(np.float32)
    gray = smooth.mean(axis=2, keepdims=True)  # mostly luminance variation: backgrounds stay unsaturated
    tex = base + amp * (0.8 * gray + 0.2 * smooth - 0.5) + grain
    return np.clip(tex, 0, 255).astype(np.uint8)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    elif kind == "triangle":
        t = angle + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    elif kind == "star":
        t = angle + np.arange(10) * np.pi / 5
        rr = np.where(np.arange(10) % 2 == 0, r, r * 0.5)
        pts = np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1)
    else:
        raise ValueError(kind)
    return np.round(pts).astype(np.int32)


def shape_pixels(spec: ShapeSpec, size: int) -> np.ndarray:
    """Boolean (size, size) footprint of one shape (no anti-aliasing, so masks stay exact)."""
    canvas = np.zeros((size, size), np.uint8)
    cx, cy = spec.center
    if spec.kind == "circle":
        cv2.circle(canvas, (int(round(cx)), int(round(cy))), int(round(spec.radius)), 1, -1, cv2.LINE_8)
    else:
        cv2.fillPoly(canvas, [_polygon(spec.kind, cx, cy, spec.radius, spec.angle)], 1, cv2.LINE_8)
    return canvas.astype(bool)


def _shape_color(rng: np.random.Generator, kind: str) -> tuple[int, int, int]:
    hue = (_HUE_CENTER[kind] + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def render_shapes(seed: int, index: int, size: int = 128, max_shapes: int = 4
                  ) -> tuple[np.ndarray, np.ndarray, list[ShapeSpec]]:
    """One shapes sample: image (size, size, 3) uint8, mask (size, size) uint8 class ids, and
    the shapes in drawing order (later ones on top)."""
    rng = np.random.default_rng([seed, index])
    image = _texture(rng, size)
    mask = np.zeros((size, size), np.uint8)
    specs = []
    for _ in range(int(rng.integers(min(2, max_shapes), max_shapes + 1))):
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        radius = float(rng.uniform(0.1, 0.22) * size * _SIZE_SCALE[kind])
        cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
        spec = ShapeSpec(kind, SHAPE_CLASSES.index(kind), (float(cx), float(cy)), radius,
                         float(rng.uniform(0, 2 * np.pi)), _shape_color(rng, kind))
        footprint = shape_pixels(spec, size)
        image[footprint] = spec.color
        mask[footprint] = spec.class_id
        specs.append(spec)
    return image, mask, specs


# --------------------------------------------------------------------------- wafer
def _disc(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On-wafer boolean map, normalised radius and angle for a (size, size) die grid."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - c, yy - c
    r = np.sqrt(dx * dx + dy * dy) / (size / 2)
    return r <= 0.97, r, np.arctan2(dy, dx)


def _scratch(rng: np.random.Generator, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    pt = rng.uniform(0.25, 0.75, 2) * size
    direction = rng.uniform(0, 2 * np.pi)
    pts = [pt.copy()]
    for _ in range(int(rng.integers(2, 5))):
        direction += rng.normal(0, 0.35)
        pt = pt + rng.uniform(0.1, 0.25) * size * np.array([np.cos(direction), np.sin(direction)])
        pts.append(pt.copy())
    cv2.polylines(canvas, [np.round(np.array(pts)).astype(np.int32)], False, 1, max(1, size // 64), cv2.LINE_8)
    return canvas.astype(bool)


def _pattern_region(rng: np.random.Generator, name: str, size: int, r: np.ndarray, theta: np.ndarray
                    ) -> tuple[np.ndarray, float]:
    """Where a pattern lives and the share of its dies that fail."""
    if name == "Center":
        return r < rng.uniform(0.18, 0.35), rng.uniform(0.7, 0.95)
    if name == "Donut":
        inner = rng.uniform(0.3, 0.45)
        return (r > inner) & (r < inner + rng.uniform(0.15, 0.25)), rng.uniform(0.6, 0.9)
    if name == "Edge-Ring":
        return r > rng.uniform(0.82, 0.9), rng.uniform(0.7, 0.95)
    if name == "Edge-Loc":
        start, width = rng.uniform(-np.pi, np.pi), rng.uniform(0.4, 1.2)
        dtheta = (theta - start) % (2 * np.pi)
        return (r > rng.uniform(0.65, 0.8)) & (dtheta < width), rng.uniform(0.7, 0.95)
    if name == "Loc":
        rad, ang = rng.uniform(0, 0.55), rng.uniform(-np.pi, np.pi)
        c = (size - 1) / 2 + rad * size / 2 * np.array([np.cos(ang), np.sin(ang)])
        yy, xx = np.mgrid[0:size, 0:size]
        ax, ay = rng.uniform(0.08, 0.2, 2) * size
        return ((xx - c[0]) / ax) ** 2 + ((yy - c[1]) / ay) ** 2 < 1, rng.uniform(0.6, 0.9)
    if name == "Scratch":
        return _scratch(rng, size), rng.uniform(0.85, 1.0)
    if name == "Random":
        return r < 2, rng.uniform(0.12, 0.25)
    if name == "Near-full":
        return r < 2, rng.uniform(0.8, 0.95)
    raise ValueError(name)


def render_wafer(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One wafer map: image (size, size, 1) uint8 (0 off-wafer, 128 pass, 255 fail), masks
    (size, size, 8) uint8 in {0, 1} (one per pattern, in WAFER_PATTERNS order), pattern names."""
    rng = np.random.default_rng([seed, index])
    on_wafer, r, theta = _disc(size)
    if rng.uniform() < 0.06:
        chosen = ["Near-full"]  # it covers the wafer: alone, as in real maps
    else:
        others = [p for p in WAFER_PATTERNS if p != "Near-full"]
        k = int(rng.choice([0, 1, 1, 2, 2, 3]))
        chosen = [others[i] for i in sorted(rng.choice(len(others), size=k, replace=False))]
    # a few scattered fails on every wafer, belonging to no pattern
    fail = on_wafer & (rng.uniform(size=(size, size)) < rng.uniform(0.0, 0.03))
    masks = np.zeros((size, size, len(WAFER_PATTERNS)), np.uint8)
    for name in chosen:
        region, density = _pattern_region(rng, name, size, r, theta)
        hits = region & on_wafer & (rng.uniform(size=(size, size)) < density)
        masks[..., WAFER_PATTERNS.index(name)] = hits
        fail |= hits
    image = np.where(on_wafer, np.where(fail, 255, 128), 0).astype(np.uint8)[:, :, None]
    return image, masks, chosen
