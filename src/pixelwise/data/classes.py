"""Class tables (names, colours, ignore_index) and decoding raw masks into class ids.

A data folder may carry `classes.json` or `classes.yaml`:

    {"classes": [{"id": 0, "name": "Sky", "color": [128, 128, 128]}, ...],
     "ignore_index": 255, "task": "multiclass"}      # "task" is optional

Without one, classes are inferred from the masks (`infer_classes`) and the inference is
reported, so a user sees what was guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pixelwise.data.masks import is_colour_mask, pack_rgb, squeeze_grey, unpack_rgb
from pixelwise.errors import DataError

CLASS_FILES = ("classes.json", "classes.yaml", "classes.yml")
_UNKNOWN = np.uint32(0xFFFFFFFF)  # sentinel in lookup tables: a raw value no class claims


def default_colors(n: int) -> list[tuple[int, int, int]]:
    """A deterministic, well-separated palette (the bit-interleaving scheme VOC uses)."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


@dataclass
class ClassTable:
    """Names and display colours by class id, the ignore value, and the suggested task kind."""

    names: list[str]
    colors: list[tuple[int, int, int]]
    ignore_index: int = 255
    task: str = "multiclass"
    # raw mask value -> class id when they differ (e.g. Cityscapes labelIds, 0/255 binary).
    value_map: dict[int, int] = field(default_factory=dict)
    # How the table was obtained, for reports ("classes.json", "inferred from 20 masks: ...").
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.colors) != len(self.names):
            raise DataError(None, f"class table has {len(self.names)} names but {len(self.colors)} colours")
        self.colors = [tuple(int(v) for v in c) for c in self.colors]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def make_task(self):
        """The `Task` this table suggests."""
        from pixelwise.tasks import Task

        return Task(self.task, self.num_classes, self.ignore_index)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint form: {names, colors, ignore_index}."""
        return {"names": list(self.names), "colors": [list(c) for c in self.colors], "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassTable":
        return cls(list(d["names"]), [tuple(c) for c in d["colors"]], int(d.get("ignore_index", 255)),
                   d.get("task", "multiclass"))


def suggest_task(num_classes: int, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    return "binary" if num_classes == 2 else "multiclass"


def find_class_file(root: Path) -> Path | None:
    for name in CLASS_FILES:
        if (root / name).is_file():
            return root / name
    return None


def load_class_table(path: str | Path) -> ClassTable:
    """Read classes.json / classes.yaml. Class ids must be 0..C-1 (in any order)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read class table: {exc}") from None
    except Exception as exc:  # yaml.YAMLError
        raise DataError(path, f"cannot parse class table: {exc}") from None
    if isinstance(data, list):
        data = {"classes": data}
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise DataError(path, "expected a 'classes' list of {id, name, color} entries")
    entries = data["classes"]
    try:
        if all(isinstance(e, str) for e in entries):
            entries = [{"id": i, "name": n} for i, n in enumerate(entries)]
        ids = [int(e.get("id", i)) for i, e in enumerate(entries)]
        names = [str(e["name"]) for e in entries]
        raw_colors = [e.get("color") for e in entries]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(path, f"each class needs a 'name' (and optional 'id', 'color'): {exc}") from None
    if sorted(ids) != list(range(len(ids))):
        raise DataError(path, f"class ids must be 0..{len(ids) - 1} without gaps, got {sorted(ids)}")
    order = np.argsort(ids)
    fallback = default_colors(len(ids))
    colors = []
    for k in order:
        c = raw_colors[k]
        if c is None:
            c = fallback[ids[k]]
        if len(c) != 3 or not all(0 <= int(v) <= 255 for v in c):
            raise DataError(path, f"colour of class {names[k]!r} must be [r, g, b] in 0..255, got {c}")
        colors.append(tuple(int(v) for v in c))
    ignore = int(data.get("ignore_index", 255))
    task = data.get("task")
    if task not in (None, "binary", "multiclass", "multilabel"):
        raise DataError(path, f"task must be binary, multiclass or multilabel, got {task!r}")
    return ClassTable([names[k] for k in order], colors, ignore, suggest_task(len(ids), task), source=path.name)


# --------------------------------------------------------------------------- inference
def infer_classes(value_counts: dict[int, int], rgb_colors: Iterable[tuple[int, int, int]] = (),
                  num_masks: int = 0, ignore_index: int = 255) -> ClassTable:
    """Guess a class table from the values seen in the masks, with a report in `.source`.

    - only {0, 255}: a 0/255 binary mask, 255 -> foreground (1)
    - only {0, 1}: binary
    - other integers: class ids 0..max (255 = ignore), names class_0, class_1, ...
    - RGB colours: one class per colour, black first (usually background)
    """
    colors = sorted(set(tuple(int(v) for v in c) for c in rgb_colors))
    if colors:
        colors.sort(key=lambda c: (c != (0, 0, 0), c))
        names = ["background" if c == (0, 0, 0) else f"class_{i}" for i, c in enumerate(colors)]
        report = f"inferred {len(colors)} classes from {len(colors)} distinct colours in {num_masks} RGB masks"
        return ClassTable(names, colors, ignore_index, suggest_task(len(colors)), source=report)
    values = sorted(v for v, n in value_counts.items() if n > 0)
    if not values:
        raise DataError(None, "cannot infer classes: no mask pixels found")
    if set(values) <= {0, 255} and 255 in values:
        report = f"inferred binary 0/255 masks from {num_masks} masks (255 -> foreground, class 1)"
        return ClassTable(["background", "foreground"], [(0, 0, 0), (255, 255, 255)], ignore_index, "binary",
                          value_map={0: 0, 255: 1}, source=report)
    labels = [v for v in values if v != ignore_index]
    top = max(labels) if labels else 1
    n = max(top + 1, 2)
    names = ["background"] + [f"class_{i}" for i in range(1, n)]
    absent = sorted(set(range(n)) - set(labels))
    report = (f"inferred {n} classes from values {labels} in {num_masks} masks"
              + (f" (ids {absent} never appear)" if absent else "")
              + (f"; {ignore_index} treated as ignore" if ignore_index in values else ""))
    return ClassTable(names, default_colors(n), ignore_index, suggest_task(n), source=report)


# --------------------------------------------------------------------------- decoding
class MaskDecoder:
    """Turns a raw mask (index map, palette indices, RGB colours, multi-channel array) into targets.

    Single-label output: `HxW` uint8 (uint16 when ids exceed 255) class ids with ignore_index.
    Multilabel output: `HxWxC` uint8 in {0, 1}.
    """

    def __init__(self, classes: ClassTable, encoding: str = "index"):
        self.classes = classes
        self.encoding = encoding  # "index", "rgb" (colour-coded), "multilabel"
        ids_max = max(classes.num_classes - 1, classes.ignore_index)
        self.out_dtype = np.uint8 if ids_max <= 255 else np.uint16
        lut = np.full(65536, _UNKNOWN, dtype=np.uint32)
        if not classes.value_map:  # an explicit map lists every accepted raw value
            lut[: classes.num_classes] = np.arange(classes.num_classes)
        lut[classes.ignore_index] = classes.ignore_index
        for raw, cid in classes.value_map.items():
            lut[raw] = cid
        self.lut = lut
        codes = pack_rgb(np.array(classes.colors, dtype=np.int64).reshape(-1, 3))
        self._color_order = np.argsort(codes)
        self._color_codes = codes[self._color_order]

    def valid_values(self) -> np.ndarray:
        return np.flatnonzero(self.lut != _UNKNOWN)

    def decode(self, raw: np.ndarray, path: Path | str | None = None) -> np.ndarray:
        if self.encoding == "multilabel":
            return self.decode_multilabel(raw, path)
        if is_colour_mask(raw, self.encoding):
            return self.decode_rgb(raw[..., :3], path)
        raw = squeeze_grey(raw)
        if raw.ndim != 2:
            raise DataError(path, f"mask has shape {raw.shape}; expected a 2-D index map"
                            + (" (an RGB colour mask needs colours in classes.json)" if raw.ndim == 3 else ""))
        if not np.issubdtype(raw.dtype, np.integer) or raw.min() < 0 or raw.max() > 65535:
            raise DataError(path, f"mask values must be integers 0..65535, got {raw.dtype}")
        out = self.lut[raw] if raw.dtype != np.uint8 else self.lut[:256][raw]
        if (out == _UNKNOWN).any():
            bad = np.unique(raw[out == _UNKNOWN])
            raise DataError(path, f"mask values {bad[:20].tolist()} are not classes 0..{self.classes.num_classes - 1} "
                            f"or ignore {self.classes.ignore_index}")
        return out.astype(self.out_dtype, copy=False)

    def decode_rgb(self, raw: np.ndarray, path: Path | str | None = None) -> np.ndarray:
        codes = pack_rgb(raw)
        pos = np.searchsorted(self._color_codes, codes).clip(0, len(self._color_codes) - 1)
        known = self._color_codes[pos] == codes
        out = self._color_order[pos].astype(self.out_dtype)
        if not known.all():
            # black is the usual "void" colour when it is not a class
            unknown_codes = np.unique(codes[~known])
            if unknown_codes.tolist() == [0]:
                out[~known] = self.classes.ignore_index
            else:
                shown = unpack_rgb(unknown_codes[:10])
                raise DataError(path, f"{len(unknown_codes)} mask colour(s) not in the colour table, e.g. {shown}")
        return out

    def decode_multilabel(self, raw: np.ndarray, path: Path | str | None = None) -> np.ndarray:
        c = self.classes.num_classes
        if raw.ndim == 2 and c == 1:
            raw = raw[:, :, None]
        if raw.ndim != 3:
            raise DataError(path, f"multilabel mask must be HxWxC or CxHxW, got shape {raw.shape}")
        if raw.shape[-1] != c and raw.shape[0] == c:
            raw = np.moveaxis(raw, 0, -1)
        if raw.shape[-1] != c:
            raise DataError(path, f"multilabel mask has shape {raw.shape}; expected {c} channels (one per class)")
        out = np.ascontiguousarray(raw).astype(np.uint8, copy=False) if raw.dtype != np.bool_ else raw.astype(np.uint8)
        vals = np.unique(out) if out.size < 4_000_000 else np.unique(out[::7])
        if set(vals.tolist()) <= {0, 255} and 255 in vals:
            out = (out == 255).astype(np.uint8)  # 0/255 binary masks
        elif not set(vals.tolist()) <= {0, 1, self.classes.ignore_index}:
            raise DataError(path, f"multilabel mask values must be 0/1 (or 0/255), got {vals[:10].tolist()}")
        return out


def stack_class_masks(masks: Sequence[np.ndarray], paths: Sequence[Path]) -> np.ndarray:
    """One binary mask per class (a folder per class) -> HxWxC."""
    shapes = {m.shape[:2] for m in masks}
    if len(shapes) != 1:
        raise DataError(paths[0], f"per-class masks differ in size: {sorted(shapes)} ({[p.name for p in paths]})")
    planes = [m if m.ndim == 2 else m[..., 0] for m in masks]
    return np.stack(planes, axis=-1)
