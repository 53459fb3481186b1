"""The shared model every annotation reader produces: images, their shapes, a class map, and
what was skipped on the way.

A reader turns a tool's export into an `AnnotationSet`: one `AnnotatedImage` per image, each
holding `Shape`s (polygons, an RLE or a small bitmap) already mapped to class ids. Problems
are recorded, never dropped: `errors` (annotation or image skipped) and `warnings`
(rasterised, but with a caveat), each naming the file and the annotation id.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelwise.data.classes import ClassTable, default_colors, load_class_table
from pixelwise.errors import DataError

BACKGROUND_NAMES = ("background", "_background_", "__background__")
IGNORE_NAMES = ("__ignore__",)
LABEL_FILES = ("classes.json", "classes.yaml", "classes.yml", "labels.txt")


@dataclass
class Shape:
    """One annotation, mapped to a class. Exactly one of `polygons`, `rle`, `bitmap` is set.

    polygons: (N, 2) float arrays in pixel-corner coordinates (pixel (col i, row j) is the
    unit square [i, i+1) x [j, j+1)); several polygons are unioned, as COCO does.
    rle: a COCO RLE dict of the whole image. bitmap: a bool array placed at `offset` (x, y).
    """

    class_id: int
    source: str                                   # "file.json: annotation 12", for messages
    polygons: list[np.ndarray] | None = None
    rle: dict[str, Any] | None = None
    bitmap: np.ndarray | None = None
    offset: tuple[int, int] = (0, 0)
    z: int = 0                                    # drawing order: higher on top, ties in file order


@dataclass
class AnnotatedImage:
    name: str                                     # sample name (relative stem)
    image_path: Path
    width: int
    height: int
    shapes: list[Shape] = field(default_factory=list)
    split: str | None = None                      # from the file (COCO file name, CVAT subset...)
    source: str = ""                              # the annotation file, for messages


@dataclass
class AnnotationSet:
    kind: str                                     # "coco", "labelme", "cvat", "labelstudio"
    root: Path                                    # the annotation file or folder
    classes: ClassTable
    fill: int                                     # class id of pixels no annotation covers
    images: list[AnnotatedImage] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)     # (where, problem): skipped
    warnings: list[tuple[str, str]] = field(default_factory=list)   # (where, problem): kept
    skipped: Counter = field(default_factory=Counter)               # reason -> count
    read: int = 0                                                   # annotations turned into shapes

    def skip(self, where: str, reason: str, detail: str = "", error: bool = True) -> None:
        """An annotation left out: counted by reason and listed with where it is."""
        self.skipped[reason] += 1
        (self.errors if error else self.warnings).append((where, f"{reason}{': ' + detail if detail else ''}"))

    def locate(self, refs: str | list[str], roots: list[Path], where: str, shown: str | None = None) -> Path | None:
        """The image an annotation file names (first of `refs` found), or None with the error recorded."""
        for ref in [refs] if isinstance(refs, str) else refs:
            found = find_image(ref, roots)
            if found is not None:
                return found
        shown = shown if shown is not None else (refs if isinstance(refs, str) else refs[0] if refs else "")
        self.errors.append((where, f"image {shown!r} is referenced but missing "
                                   f"(looked under {', '.join(str(r) for r in roots)})"))
        return None

    def summary(self) -> str:
        text = f"{self.kind} annotations: {self.read} read"
        if self.skipped:
            text += f", {sum(self.skipped.values())} skipped (" + ", ".join(
                f"{n} {reason}" for reason, n in self.skipped.most_common()) + ")"
        return text


# --------------------------------------------------------------------------- class map
class ClassMap:
    """Annotation label names -> class ids.

    With a labels file (classes.json/yaml, or labels.txt with one name per line), names are
    looked up in it and any other name is an unknown category. Without one, the names the
    export declares (or uses) become the classes in order, after a "background" class 0 for
    uncovered pixels unless a class is already called background. `__ignore__` maps to the
    ignore index. Uncovered pixels get the background class, or the ignore index when a
    labels file has no background class.
    """

    def __init__(self, table: ClassTable, fixed: bool):
        self.table = table
        self.fixed = fixed
        self.ids = {n: i for i, n in enumerate(table.names)}
        self.ids.update({n.lower(): i for i, n in enumerate(table.names) if n.lower() not in self.ids})

    @classmethod
    def from_names(cls, names: list[str], source: str) -> "ClassMap":
        seen: list[str] = []
        for n in names:
            if n not in seen and n not in IGNORE_NAMES:
                seen.append(n)
        bg = [n for n in seen if n.lower() in BACKGROUND_NAMES]
        ordered = bg[:1] + [n for n in seen if n not in bg[:1]] if bg else ["background"] + seen
        table = ClassTable(ordered, default_colors(len(ordered)), 255, suggest(len(ordered)),
                           source=f"{source}: {len(ordered)} classes"
                                  + ("" if bg else ", background (class 0) added for uncovered pixels"))
        return cls(table, fixed=False)

    @classmethod
    def from_file(cls, path: Path) -> "ClassMap":
        if path.suffix.lower() == ".txt":
            try:
                lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(path, f"cannot read labels file: {exc}") from None
            names = [n for n in lines if n and not n.startswith("#") and n not in IGNORE_NAMES]
            if not names:
                raise DataError(path, "labels file lists no class names")
            table = ClassTable(names, default_colors(len(names)), 255, suggest(len(names)), source=path.name)
        else:
            table = load_class_table(path)
        return cls(table, fixed=True)

    @property
    def fill(self) -> int:
        return fill_class(self.table)

    def lookup(self, name: str) -> int | None:
        """Class id for a label name; None when the class table does not know it."""
        if name in IGNORE_NAMES:
            return self.table.ignore_index
        return self.ids.get(name, self.ids.get(name.lower()))


def fill_class(classes: ClassTable) -> int:
    """Pixels no annotation covers: the class named background, else the ignore index."""
    for i, n in enumerate(classes.names):
        if n.lower() in BACKGROUND_NAMES:
            return i
    return classes.ignore_index


def suggest(n: int) -> str:
    return "binary" if n == 2 else "multiclass"


def find_labels_file(*folders: Path) -> Path | None:
    for folder in folders:
        for name in LABEL_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read annotation file: {exc}") from None


def find_image(ref: str, roots: list[Path]) -> Path | None:
    """The image an annotation names: `ref` under each root, then its bare file name."""
    ref = ref.replace("\\", "/")
    rel = Path(ref)
    for candidate in [r / rel for r in roots] + [r / rel.name for r in roots]:
        if candidate.is_file():
            return candidate
    return None
