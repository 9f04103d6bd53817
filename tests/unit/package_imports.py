"""The package's imports, read from the source with ``ast``: which dogbreed modules each module imports.

Every module under ``code/dogbreed`` is parsed, and every import of ``dogbreed.*`` in it is
collected: at module level or inside a function (a lazy import still runs), absolute or
relative, even under ``if TYPE_CHECKING:`` (the arrow is there for a reader). The areas are
the subpackages (training, serving, report, tune, launcher, tools) and the bottom: the
top-level modules beside ``artifacts.py``, which hold what several areas share.

Shared by tests/unit/test_import_structure.py (the arrows) and tests/unit/test_serve_dockerfile.py
(what the serving image must copy).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "dogbreed"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "code" / PACKAGE
BOTTOM = "bottom"  # the top-level modules beside artifacts.py, and dogbreed/__init__.py


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
    imports: list[Import]  # of dogbreed modules, resolved (see parse_package)
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


def with_parents(module: str) -> list[str]:
    """Importing ``dogbreed.a.b`` runs ``dogbreed/__init__``, ``dogbreed/a/__init__`` and ``dogbreed.a.b``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def reachable(modules: dict[str, Module], starts: Iterable[str]) -> dict[str, tuple[str, Import] | None]:
    """Every module that importing ``starts`` runs, transitively, lazily or not, with their parent packages.

    Maps each to the module and import it was first reached by (None for a start), so a
    message can say how it was reached (see :func:`chain`).
    """
    came_from: dict[str, tuple[str, Import] | None] = {}
    queue: deque[str] = deque()
    for name in starts:
        came_from[name] = None
        queue.append(name)
    while queue:
        name = queue.popleft()
        for imported in modules[name].imports:
            for reached in with_parents(imported.target):
                if reached in modules and reached not in came_from:
                    came_from[reached] = (name, imported)
                    queue.append(reached)
    return came_from


def chain(came_from: dict[str, tuple[str, Import] | None], name: str) -> str:
    """How :func:`reachable` reached ``name``: ``name <- its importer <- ... <- a start``."""
    steps = [name]
    while (step := came_from[name]) is not None:
        name = step[0]
        steps.append(name)
    return " <- ".join(steps)
