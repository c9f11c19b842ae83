"""Foundations at the bottom (DESIGN.md property 12): no package imports a layer above its own, the rooms of one
level (methods, evaluation, results) do not import each other, and there is no import cycle.

The check reads the source with `ast` (nothing is imported), so it sees function-level imports too, which an
import-time check would miss. Imports under `if TYPE_CHECKING:` are ignored: they never run.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Layer:
    """level: a module may import its own level and those below. room: modules of one level in different rooms
    may not import each other. forbids: modules below it that it must not import all the same."""

    level: int
    room: str | None = None
    forbids: tuple[str, ...] = ()


# A module's layer is the entry with the longest name that is the module or a dotted prefix of it, so a new module
# in benchmark/ (grid.py, executors.py) is in layer 4 until an entry says otherwise.
LAYERS: dict[str, Layer] = {
    "benchmark.core": Layer(0),  # errors, registry, io, progress, config, models, mask, data
    "attacks": Layer(1),  # pgd, autoattack, smoothing, bounds
    "benchmark.training": Layer(2),  # loop, objectives
    "methods": Layer(3, "methods"),  # pruners; may import training (Phase)
    "benchmark.evaluation": Layer(3, "evaluation"),  # evaluators, cascade, checks, verification
    "results": Layer(3, "results", forbids=("benchmark.training",)),  # store, report
    "benchmark": Layer(4),  # everything else: presets, grid, runner, external, executors
    "benchmark.cli": Layer(5),
    "benchmark.__main__": Layer(5),
}


def project_packages(root: Path = ROOT) -> list[str]:
    """The top-level packages pyproject.toml installs (`benchmark*` -> benchmark), so a new one needs a layer."""
    with open(root / "pyproject.toml", "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.split(".")[0].rstrip("*") for pattern in include})


PACKAGES = project_packages()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the project module it resolves to (a submodule where `from pkg import sub` names one)
    path: Path
    line: int
    source: str
    deferred: bool  # inside a function: runs when called, not when the importer is imported

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}: {self.source}"


def discover(root: Path, packages: list[str]) -> dict[str, Path]:
    """Module name -> file, for every .py file of the packages (a package is its __init__.py)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement and whether it is deferred (inside a function), skipping TYPE_CHECKING blocks."""

    def walk(node: ast.AST, deferred: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, deferred
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children: list[ast.AST] = list(node.orelse)  # the else branch runs
        else:
            children = list(ast.iter_child_nodes(node))
        inner = deferred or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in children:
            yield from walk(child, inner)

    yield from walk(tree, False)


def _longest_prefix(name: str, names: Container[str]) -> str | None:
    """The longest of `names` that is `name` or a dotted prefix of it (`from x.y import Name` -> module x.y)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in names:
            return ".".join(parts)
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, Path]) -> list[Import]:
    """The project modules `module` imports, relative imports resolved."""
    path = modules[module]
    source = path.read_text()
    lines = source.splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node, deferred in _statements(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for name in dict.fromkeys(names):
            target = _longest_prefix(name, modules)
            if target is not None and target != module:
                found.append(Import(module, target, path, node.lineno, lines[node.lineno - 1].strip(), deferred))
    return found


def layer_of(module: str, modules: dict[str, Path], layers: dict[str, Layer]) -> Layer | None:
    """The module's entry in `layers`. A package's __init__ runs before any module in it is imported, so a package
    that holds a lower layer than its own entry (benchmark holds benchmark.core) is held to its lowest module's."""

    def entry(name: str) -> Layer | None:
        prefix = _longest_prefix(name, layers)
        return layers[prefix] if prefix is not None else None

    own = entry(module)
    if own is None or modules[module].name != "__init__.py":
        return own
    inside = [entry(m) for m in modules if m.startswith(module + ".")]
    lowest = min((layer.level for layer in inside if layer is not None), default=own.level)
    return Layer(min(own.level, lowest), own.room, own.forbids)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(root: Path, packages: list[str], layers: dict[str, Layer]) -> list[str]:
    """One line per import of a higher layer, of another room of the same level, or of a module a layer forbids."""
    modules = discover(root, packages)
    found = []
    for module in modules:
        mine = layer_of(module, modules, layers)
        if mine is None:
            found.append(f"{modules[module].relative_to(root)}: {module} has no layer")
            continue
        for imp in imports_of(module, modules):
            theirs = layer_of(imp.target, modules, layers)
            if theirs is None:
                continue  # reported as the target's own violation
            why = None
            if theirs.level > mine.level:
                why = f"layer {mine.level} imports layer {theirs.level}"
            elif theirs.level == mine.level and mine.room and theirs.room and mine.room != theirs.room:
                why = f"room {mine.room} imports room {theirs.room} of the same layer {mine.level}"
            elif _within(imp.target, mine.forbids):
                why = f"{module} may not import {imp.target}"
            if why:
                found.append(f"{imp.where(root)}  ({imp.importer} -> {imp.target}: {why})")
    return found


def find_cycle(root: Path, packages: list[str]) -> list[str] | None:
    """One import cycle among module-level imports, as a chain `a (file:line) -> b ... -> a`, or None."""
    modules = discover(root, packages)
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for module in modules:
        for imp in imports_of(module, modules):
            if not imp.deferred:
                edges[module].setdefault(imp.target, imp)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in edges[module]:
            if state.get(target) == 1:
                chain = path[path.index(target):] + [target]
                return [f"{a} ({edges[a][b].where(root)})" for a, b in zip(chain, chain[1:], strict=False)] + [target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        state[module] = 2
        path.pop()
        return None

    for module in modules:
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


# --- the project ------------------------------------------------------------------------------------------------


def test_every_module_of_the_project_has_a_layer_and_its_imports_are_seen():
    modules = discover(ROOT, PACKAGES)
    assert {"benchmark.cli", "benchmark.core.config", "attacks.pgd", "methods.hydra", "results.store"} <= set(modules)
    assert [m for m in modules if layer_of(m, modules, LAYERS) is None] == []
    assert layer_of("benchmark.runner", modules, LAYERS) == LAYERS["benchmark"]
    assert layer_of("benchmark", modules, LAYERS).level == 0  # its __init__ runs before benchmark.core's modules
    edges = {(i.importer, i.target, i.deferred) for m in modules for i in imports_of(m, modules)}
    # a module-level import, `from pkg import submodule`, and a function-level import, as the checker must see them
    assert ("benchmark.runner", "results.store", False) in edges
    assert ("benchmark.runner", "benchmark.training.loop", False) in edges
    assert ("benchmark.cli", "benchmark.runner", True) in edges


def test_no_module_imports_a_higher_layer_or_a_sibling_room():
    found = violations(ROOT, PACKAGES, LAYERS)
    assert not found, "layering violations:\n" + "\n".join(found)


def test_there_is_no_import_cycle_among_module_level_imports():
    cycle = find_cycle(ROOT, PACKAGES)
    assert cycle is None, "import cycle:\n  " + "\n  -> ".join(cycle or [])


# --- the checker itself, on a synthetic project ----------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


SYNTHETIC_LAYERS = {
    "app.base": Layer(0),
    "left": Layer(1, "left"),
    "right": Layer(1, "right", forbids=("app.base.secret",)),
    "app": Layer(2),
}


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    _write(tmp_path, {
        "app/__init__.py": "",
        "app/base/__init__.py": "",
        "app/base/errors.py": "import os\n",
        "app/base/secret.py": "from . import errors\n",
        "app/base/config.py": (  # three upward imports: function-level, relative, and `import a.b`
            "from typing import TYPE_CHECKING\n"
            "from .errors import *\n"
            "if TYPE_CHECKING:\n"
            "    from app.runner import Runner\n"
            "def f():\n"
            "    from ..runner import run\n"
            "    import app.runner\n"
            "    return run\n"
            "class C:\n"
            "    def g(self):\n"
            "        from left import thing\n"),
        "app/runner.py": "from app.base import config, errors\nimport left.thing\nimport right\n",
        "left/__init__.py": "",
        "left/thing.py": "from right.other import x\nfrom app.base.errors import *\n",
        "right/__init__.py": "from right import other\n",
        "right/other.py": "import right.cycle_a\nx = 1\n",
        "right/cycle_a.py": "from right import cycle_b\n",
        "right/cycle_b.py": "def late():\n    import right.other\nfrom . import cycle_c\n",
        "right/cycle_c.py": "import right.other\nfrom app.base import secret\n",
    })
    return tmp_path


def test_the_checker_names_file_line_and_import_of_every_violation(synthetic):
    found = violations(synthetic, ["app", "left", "right"], SYNTHETIC_LAYERS)
    expected = [
        "app/base/config.py:6: from ..runner import run  (app.base.config -> app.runner: layer 0 imports layer 2)",
        "app/base/config.py:7: import app.runner  (app.base.config -> app.runner: layer 0 imports layer 2)",
        "app/base/config.py:11: from left import thing  (app.base.config -> left.thing: layer 0 imports layer 1)",
        "left/thing.py:1: from right.other import x  (left.thing -> right.other: room left imports room right of "
        "the same layer 1)",
        "right/cycle_c.py:2: from app.base import secret  (right.cycle_c -> app.base.secret: right.cycle_c may not "
        "import app.base.secret)",
    ]
    assert sorted(found) == sorted(expected)  # the TYPE_CHECKING import and the allowed ones are not reported


def test_the_checker_reports_a_module_outside_every_layer(synthetic):
    _write(synthetic, {"stray/__init__.py": ""})
    found = violations(synthetic, ["app", "left", "right", "stray"], SYNTHETIC_LAYERS)
    assert "stray/__init__.py: stray has no layer" in found


def test_the_checker_finds_a_cycle_through_module_level_imports_only(synthetic):
    cycle = find_cycle(synthetic, ["app", "left", "right"])
    assert cycle is not None and cycle[0].startswith("right.other (right/other.py:1: import right.cycle_a)")
    assert [step.split(" ")[0] for step in cycle] == ["right.other", "right.cycle_a", "right.cycle_b",
                                                      "right.cycle_c", "right.other"]
    (synthetic / "right/cycle_c.py").write_text("def late():\n    import right.other\n")
    assert find_cycle(synthetic, ["app", "left", "right"]) is None  # the function-level edge does not count
