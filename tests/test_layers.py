"""The layer order of docs/architecture.md, enforced: no module imports a higher layer.

Every module of src/pixelwise is parsed with `ast`, so imports inside functions, relative
imports, `from pixelwise import submodule` and `importlib.import_module("pixelwise.x")`
with a literal name all count. A failure names file:line, the import and the rule broken.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Low to high. A module may import its own layer and the layers before it, nothing after.
# Names are module prefixes: "pixelwise.data" covers pixelwise.data and every module under it.
# "pixelwise" alone is the package root (__init__.py: __version__ and a lazy public surface
# resolved at run time, so it holds no static imports of its own).
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["pixelwise", "pixelwise.errors", "pixelwise.atomic", "pixelwise.runtime", "pixelwise.collective"]),
    ("components", ["pixelwise.tasks", "pixelwise.visualize", "pixelwise.data", "pixelwise.models",
                    "pixelwise.losses", "pixelwise.metrics", "pixelwise.weights"]),
    ("checkpoint", ["pixelwise.checkpoint"]),
    ("inference", ["pixelwise.inference", "pixelwise.export"]),
    ("training", ["pixelwise.training"]),
    ("presentation", ["pixelwise.report", "pixelwise.serve"]),
    ("workflows", ["pixelwise.workflows", "pixelwise.planning", "pixelwise.bench", "pixelwise.integrations",
                   "pixelwise.audit"]),
    ("interface", ["pixelwise.commands", "pixelwise.cli", "pixelwise.__main__", "pixelwise.api"]),
]


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """Index of the layer owning `module` (longest matching prefix), None when unassigned."""
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if module == prefix or (module.startswith(prefix + ".") and "." in prefix):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return None if best is None else best[1]


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool, src: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import anywhere in `tree`, functions included."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import name`: name is a submodule when a file or folder says so.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                folder = src.joinpath(*candidate.split("."))
                if folder.is_dir() or folder.with_suffix(".py").is_file():
                    found.append((node.lineno, candidate))
                else:
                    found.append((node.lineno, target))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def check_layers(src: Path, package: str, layers: list[tuple[str, list[str]]]) -> list[str]:
    """Every broken rule under src/package, as 'file:line: message' lines."""
    problems: list[str] = []
    names = [name for name, _ in layers]
    for path in sorted((src / package).rglob("*.py")):
        module = module_name(path, src)
        own = layer_of(module, layers)
        where = path.relative_to(src)
        if own is None:
            problems.append(f"{where}:1: module {module} belongs to no layer; add it to LAYERS "
                            f"in tests/test_layers.py and to docs/architecture.md")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imported_modules(tree, module, path.name == "__init__.py", src):
            if target != package and not target.startswith(package + "."):
                continue  # third-party and standard library
            theirs = layer_of(target, layers)
            if theirs is None:
                problems.append(f"{where}:{line}: {module} imports {target}, which belongs to no layer")
            elif theirs > own:
                problems.append(f"{where}:{line}: {module} (layer {names[own]!r}) imports {target} "
                                f"(layer {names[theirs]!r}): a lower layer must not import a higher one")
    return problems


def test_pixelwise_respects_its_layers():
    problems = check_layers(SRC, "pixelwise", LAYERS)
    assert not problems, "layer rules broken (docs/architecture.md, 'Layers'):\n" + "\n".join(problems)


def test_architecture_doc_lists_every_layer_in_order():
    doc = (SRC.parent / "docs" / "architecture.md").read_text()
    section = doc.split("## Layers", 1)[1].split("\n## ", 1)[0]
    positions = [section.find(f"`{name}`") for name, _ in LAYERS]
    assert -1 not in positions, f"docs/architecture.md 'Layers' misses a layer name: {positions}"
    assert positions == sorted(positions), "docs/architecture.md lists the layers in another order"
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix != "pixelwise" and ((SRC / Path(*prefix.split("."))).exists()
                                          or (SRC / Path(*prefix.split("."))).with_suffix(".py").exists()):
                assert f"`{prefix}`" in section, f"docs/architecture.md 'Layers' does not name {prefix}"


# --------------------------------------------------------------- the checker itself

TOY_LAYERS = [("low", ["toy", "toy.low"]), ("mid", ["toy.mid"]), ("high", ["toy.high"])]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/low/__init__.py": "",
        "toy/low/base.py": "import os\nfrom toy.low import helpers\n",
        "toy/low/helpers.py": "X = 1\n",
        "toy/mid/__init__.py": "from toy.low.base import os\n",
        "toy/mid/work.py": "from ..low import helpers\nimport toy.low.base\n",
        "toy/high/__init__.py": "from toy.mid import work\n",
        "toy/high/app.py": "from toy import mid\n",
    })
    return tmp_path


def test_checker_passes_a_clean_package(toy):
    assert check_layers(toy, "toy", TOY_LAYERS) == []


@pytest.mark.parametrize("source, line, target", [
    ("from toy.high.app import run\n", 1, "toy.high.app"),                          # top level
    ("import os\n\ndef f():\n    from toy.mid import work\n    return work\n", 4, "toy.mid.work"),  # in a function
    ("def f():\n    from ..mid import work\n", 2, "toy.mid.work"),                   # relative, in a function
    ("from toy import high\n", 1, "toy.high"),                                     # submodule via from-import
    ("import toy.mid.work as w\n", 1, "toy.mid.work"),
    ("import importlib\nM = importlib.import_module('toy.high.app')\n", 2, "toy.high.app"),
])
def test_checker_finds_a_planted_violation(toy, source, line, target):
    _write(toy, {"toy/low/bad.py": source})
    problems = check_layers(toy, "toy", TOY_LAYERS)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{Path('toy/low/bad.py')}:{line}: toy.low.bad (layer 'low') imports {target} ")
    assert "a lower layer must not import a higher one" in problems[0]


def test_checker_names_modules_without_a_layer(toy):
    _write(toy, {"toy/stray.py": "", "toy/mid/uses.py": "from toy.elsewhere import x\n"})
    problems = check_layers(toy, "toy", [("low", ["toy.low", "toy.mid", "toy.high"])])
    assert any(p.startswith(f"{Path('toy/stray.py')}:1: module toy.stray belongs to no layer") for p in problems)
    assert any(p.startswith(f"{Path('toy/mid/uses.py')}:1: toy.mid.uses imports toy.elsewhere, which belongs to no layer")
               for p in problems)


def test_checker_allows_same_layer_and_lower(toy):
    _write(toy, {"toy/high/more.py": "from toy.high import app\nfrom toy.low.helpers import X\n"})
    assert check_layers(toy, "toy", TOY_LAYERS) == []
