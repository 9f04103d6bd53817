"""The package's import arrows run one way, read from the source: nothing here imports dogbreed.

Every module under ``code/dogbreed`` is parsed, and every import of ``dogbreed.*`` in it is
collected: at module level or inside a function (a lazy import still runs), absolute or
relative, even under ``if TYPE_CHECKING:`` (the arrow is there for a reader). The areas are the subpackages (training, serving, report, tune, launcher, tools)
and the bottom: the top-level modules beside ``artifacts.py``, which hold what several areas
share (the model directory, the preprocessing, the job's output names, the profile format,
the metric lines) and import no area. Then:

* report never imports training (the profile format and output names are bottom modules);
* serving and training never import each other; serving imports no report, tune or launcher;
* the launcher, whose venv has no torch, imports no training, serving or tune, and nothing it
  reaches, module by module, imports torch, torchvision or timm;
* the areas' graph has no cycle: if A reaches B, B does not reach A;
* every ``dogbreed.*`` import names a module that exists.

Each message names the file, the line and the import.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "dogbreed"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "code" / PACKAGE
BOTTOM = "bottom"  # the top-level modules beside artifacts.py, and dogbreed/__init__.py
TORCH = frozenset({"torch", "torchvision", "timm"})

# Which areas an area must never import (directly; the cycle test covers the rest).
FORBIDDEN = {
    "report": {"training", "serving", "tune", "launcher"},
    "serving": {"training", "report", "tune", "launcher"},
    "training": {"serving", "launcher"},
    "launcher": {"training", "serving", "tune"},
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is, and whether it runs only when a function is called."""

    target: str  # a dotted name: a dogbreed module, or a third-party package's top level
    line: int
    in_function: bool


@dataclass
class Module:
    name: str  # dotted, e.g. dogbreed.report.page
    path: Path
    is_package: bool
    imports: list[Import]  # of dogbreed modules, resolved (see resolve)
    third_party: list[Import]  # top-level names, e.g. torch

    @property
    def where(self) -> str:
        return str(self.path.relative_to(PACKAGE_DIR.parent.parent))


def module_name(path: Path) -> tuple[str, bool]:
    """``code/dogbreed/report/page.py`` -> ``("dogbreed.report.page", False)``; an ``__init__.py`` is its package."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def raw_imports(source: str, name: str, is_package: bool) -> list[tuple[str, tuple[str, ...], int, bool]]:
    """Every import in ``source`` as ``(module, imported names, line, in_function)``, relative ones made absolute.

    ``import a.b`` gives ``("a.b", (), ...)``; ``from a import b, c`` gives ``("a", ("b", "c"), ...)``.
    """
    found: list[tuple[str, tuple[str, ...], int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, (), node.lineno, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            found.append((module, tuple(alias.name for alias in node.names), node.lineno, in_function))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def is_ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def parse_package() -> dict[str, Module]:
    """Every module of the package, its dogbreed imports resolved to module names."""
    modules: dict[str, Module] = {}
    sources = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        name, is_package = module_name(path)
        modules[name] = Module(name, path, is_package, [], [])
        sources[name] = path.read_text(encoding="utf-8")
    for name, module in modules.items():
        for target, names, line, in_function in raw_imports(sources[name], name, module.is_package):
            if not is_ours(target):
                module.third_party.append(Import(target.split(".")[0], line, in_function))
                continue
            # "from dogbreed.report import figures" imports the module dogbreed.report.figures;
            # "from dogbreed.report.page import build_report" imports dogbreed.report.page.
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for resolved in submodules or [target]:
                module.imports.append(Import(resolved, line, in_function))
    return modules


def area(module: str) -> str:
    """``dogbreed.report.page`` -> ``report``; a top-level module (``dogbreed.artifacts``) -> :data:`BOTTOM`."""
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE_DIR / parts[1] / "__init__.py").is_file():
        return parts[1]
    return BOTTOM


def describe(module: Module, imported: Import) -> str:
    lazily = " (inside a function)" if imported.in_function else ""
    return f"{module.where}:{imported.line} imports {imported.target}{lazily}"


MODULES = parse_package()
AREAS = sorted({area(name) for name in MODULES})


def area_edges() -> dict[tuple[str, str], str]:
    """``(from area, to area)`` -> one import that makes that arrow, described."""
    edges: dict[tuple[str, str], str] = {}
    for module in MODULES.values():
        for imported in module.imports:
            edge = (area(module.name), area(imported.target))
            if edge[0] != edge[1]:
                edges.setdefault(edge, describe(module, imported))
    return edges


def test_the_package_is_read():
    assert {"training", "serving", "report", "tune", "launcher", "tools", BOTTOM} <= set(AREAS), AREAS
    assert len(MODULES) > 50, sorted(MODULES)


def test_the_reader_sees_lazy_relative_and_from_package_imports():
    source = (
        "import torch\n"
        "from . import data\n"
        "from .page import build_report\n"
        "from .. import artifacts\n"
        "def later():\n"
        "    from dogbreed.training.profiler import JobProfiler\n"
        "    import timm.models\n"
    )
    found = raw_imports(source, "dogbreed.report.bottlenecks", is_package=False)
    assert found == [
        ("torch", (), 1, False),
        ("dogbreed.report", ("data",), 2, False),
        ("dogbreed.report.page", ("build_report",), 3, False),
        ("dogbreed", ("artifacts",), 4, False),
        ("dogbreed.training.profiler", ("JobProfiler",), 6, True),
        ("timm.models", (), 7, True),
    ]
    assert raw_imports("from .search import main\n", "dogbreed.tune", is_package=True) == [
        ("dogbreed.tune.search", ("main",), 1, False)
    ]


def test_every_dogbreed_import_names_a_module():
    """An import of a module that is gone (say report/paths.py) fails at import time; here it fails first."""
    broken = [describe(m, i) for m in MODULES.values() for i in m.imports if i.target not in MODULES]
    assert not broken, "imports of modules that do not exist:\n" + "\n".join(broken)


@pytest.mark.parametrize("source_area", sorted(FORBIDDEN))
def test_an_area_never_imports_what_it_must_not(source_area):
    forbidden = FORBIDDEN[source_area]
    offending = [
        describe(module, imported)
        for module in MODULES.values() if area(module.name) == source_area
        for imported in module.imports if area(imported.target) in forbidden
    ]
    assert not offending, (
        f"{source_area}/ must not import {', '.join(sorted(forbidden))}; what both need belongs in a bottom "
        f"module beside artifacts.py:\n" + "\n".join(offending)
    )


def test_bottom_modules_import_no_area():
    offending = [
        describe(module, imported)
        for module in MODULES.values() if area(module.name) == BOTTOM
        for imported in module.imports if area(imported.target) != BOTTOM
    ]
    assert not offending, "the modules beside artifacts.py must import only each other:\n" + "\n".join(offending)


def with_parents(module: str) -> list[str]:
    """Importing ``dogbreed.a.b`` runs ``dogbreed/__init__``, ``dogbreed/a/__init__`` and ``dogbreed.a.b``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_the_launcher_reaches_no_torch():
    """Every module the launcher's modules import, transitively and lazily or not, is free of torch."""
    came_from: dict[str, tuple[str, Import] | None] = {}
    queue: deque[str] = deque()
    for name in MODULES:
        if area(name) == "launcher":
            came_from[name] = None
            queue.append(name)
    while queue:
        name = queue.popleft()
        for imported in MODULES[name].imports:
            for reached in with_parents(imported.target):
                if reached in MODULES and reached not in came_from:
                    came_from[reached] = (name, imported)
                    queue.append(reached)

    def chain(name: str) -> str:
        steps = [name]
        while came_from[name] is not None:
            name = came_from[name][0]
            steps.append(name)
        return " <- ".join(steps)

    offending = [
        f"{describe(MODULES[name], imported)}, reached by {chain(name)}"
        for name in came_from for imported in MODULES[name].third_party if imported.target in TORCH
    ]
    assert not offending, "the launcher's venv has no torch, but the launcher reaches it:\n" + "\n".join(offending)


def test_the_areas_import_each_other_one_way():
    edges = area_edges()
    arrows: dict[str, set[str]] = {a: set() for a in AREAS}
    for source, target in edges:
        arrows[source].add(target)

    def path(start: str, goal: str) -> list[str] | None:
        """The areas from ``start`` to ``goal`` along the arrows, or None."""
        came_from = {start: start}
        queue = deque([start])
        while queue:
            here = queue.popleft()
            if here == goal:
                steps = [here]
                while steps[-1] != start:
                    steps.append(came_from[steps[-1]])
                return steps[::-1]
            for there in sorted(arrows[here] - came_from.keys()):
                came_from[there] = here
                queue.append(there)
        return None

    cycles: dict[frozenset[tuple[str, str]], str] = {}
    for source, target in sorted(edges):
        back = path(target, source)
        if back is not None:
            loop = [source] + back
            arrows_of_loop = list(zip(loop, loop[1:]))
            cycles.setdefault(frozenset(arrows_of_loop), " -> ".join(loop) + ":\n" + "\n".join(
                f"    {edges[arrow]}" for arrow in arrows_of_loop))
    assert not cycles, "areas that import each other (A reaches B and B reaches A):\n" + "\n".join(cycles.values())
