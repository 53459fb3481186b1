"""Masks back to polygons, with vertices on pixel corners.

`trace(mask)` walks the outline of every pixel region along pixel edges, so a polygon drawn
back through the rasteriser covers exactly the same pixels. Outer outlines run clockwise on
screen (positive shoelace area with y down), holes anticlockwise. Where two pixels of a region
touch only at a corner the walk keeps to the same pixel (regions are 4-connected), so an
outline may touch itself at such a corner but never crosses itself.

`objects(mask)` splits a class mask into its 4-connected objects, each with its outlines
(simplified when asked) and whether it has holes, which COCO and LabelMe polygons cannot hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# edge directions; (dx, dy) with y pointing down
_E, _S, _W, _N = 0, 1, 2, 3
_STEP = {_E: (1, 0), _S: (0, 1), _W: (-1, 0), _N: (0, -1)}
_RIGHT_TURN = {_E: _S, _S: _W, _W: _N, _N: _E}


def _runs(d: np.ndarray, value: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of `value` along the last axis: (line index, start, end exclusive)."""
    hit = np.zeros((d.shape[0], d.shape[1] + 2), np.int8)
    hit[:, 1:-1] = d == value
    edges = np.diff(hit, axis=1)
    rows_s, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows_s, starts, ends


def trace(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a bool mask as (N, 2) int arrays of corner (x, y); see module doc."""
    m = np.pad(np.asarray(mask, bool), 1).astype(np.int8)
    h, w = m.shape[0] - 2, m.shape[1] - 2
    inner = m[:, 1:-1]
    dh = inner[1:] - inner[:-1]                # (H+1, W): boundary y = row index; +1: inside below
    inner_v = m[1:-1]
    dv = inner_v[:, 1:] - inner_v[:, :-1]      # (H, W+1): boundary x = column index; +1: inside right

    starts: dict[tuple[int, int, int], tuple[int, int]] = {}   # (x, y, dir) -> end vertex
    for value, direction in ((1, _E), (-1, _W)):
        ys, x0, x1 = _runs(dh, value)
        for y, a, b in zip(ys.tolist(), x0.tolist(), x1.tolist()):
            if direction == _E:
                starts[(a, y, _E)] = (b, y)
            else:
                starts[(b, y, _W)] = (a, y)
    for value, direction in ((1, _N), (-1, _S)):
        xs, y0, y1 = _runs(dv.T, value)
        for x, a, b in zip(xs.tolist(), y0.tolist(), y1.tolist()):
            if direction == _S:
                starts[(x, a, _S)] = (x, b)
            else:
                starts[(x, b, _N)] = (x, a)

    loops: list[np.ndarray] = []
    while starts:
        key = next(iter(starts))
        x, y, d = key
        pts = []
        while key in starts:
            end = starts.pop(key)
            pts.append((key[0], key[1]))
            d = key[2]
            # horizontal and vertical runs alternate; at a pinch corner prefer the right turn
            turn = _RIGHT_TURN[d]
            left = _RIGHT_TURN[_RIGHT_TURN[turn]]
            key = (end[0], end[1], turn) if (end[0], end[1], turn) in starts else (end[0], end[1], left)
        loops.append(np.array(pts, np.int64))
    del h, w
    return loops


def signed_area(loop: np.ndarray) -> float:
    x, y = loop[:, 0].astype(np.float64), loop[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def simplify(loop: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed loop; kept vertices are original ones (still on corners).
    Tolerance 0 returns the loop unchanged (it has no collinear vertices to drop)."""
    if tolerance <= 0 or len(loop) <= 4:
        return loop
    pts = loop.astype(np.float64)
    far = int(np.argmax(((pts - pts[0]) ** 2).sum(1)))
    keep = np.zeros(len(pts), bool)
    keep[[0, far]] = True
    closed = np.vstack([pts, pts[:1]])
    stack = [(0, far), (far, len(pts))]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b = closed[i], closed[j]
        seg = closed[i + 1:j]
        d = b - a
        norm = float(np.hypot(*d))
        if norm == 0:
            dist = np.hypot(*(seg - a).T)
        else:
            dist = np.abs(d[0] * (seg[:, 1] - a[1]) - d[1] * (seg[:, 0] - a[0])) / norm
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    out = loop[keep]
    return out if len(out) >= 3 else loop


@dataclass
class TracedObject:
    mask: np.ndarray            # bool (H, W): the object's pixels
    outlines: list[np.ndarray]  # outer outlines (one per object, possibly touching itself)
    holes: list[np.ndarray]
    bbox: tuple[int, int, int, int]   # x, y, w, h in pixels


def objects(mask: np.ndarray, tolerance: float = 0.0) -> list[TracedObject]:
    """The 4-connected objects of a bool mask, traced (and simplified) in image coordinates."""
    mask = np.asarray(mask, bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    out = []
    for i in range(1, n):
        x, y, w, h = (int(v) for v in stats[i, :4])
        crop = labels[y:y + h, x:x + w] == i
        outlines, holes = [], []
        for loop in trace(crop):
            loop = simplify(loop, tolerance) + (x, y)
            (outlines if signed_area(loop) > 0 else holes).append(loop)
        full = np.zeros(mask.shape, bool)
        full[y:y + h, x:x + w] = crop
        out.append(TracedObject(full, outlines, holes, (x, y, w, h)))
    return out
