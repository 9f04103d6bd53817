"""The package's import arrows run one way, read from the source: nothing here imports dogbreed.

Every module under ``code/dogbreed`` is parsed (tests/unit/package_imports.py), and every
import of ``dogbreed.*`` in it is collected: at module level or inside a function (a lazy
import still runs), absolute or relative, even under ``if TYPE_CHECKING:`` (the arrow is there
for a reader). The areas are the subpackages (training, serving, report, tune, launcher, tools)
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

from collections import deque

import pytest

from tests.unit.package_imports import (
    BOTTOM,
    area,
    chain,
    describe,
    parse_package,
    raw_imports,
    reachable,
)

TORCH = frozenset({"torch", "torchvision", "timm"})

# Which areas an area must never import (directly; the cycle test covers the rest).
FORBIDDEN = {
    "report": {"training", "serving", "tune", "launcher"},
    "serving": {"training", "report", "tune", "launcher"},
    "training": {"serving", "launcher"},
    "launcher": {"training", "serving", "tune"},
}

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


def test_the_launcher_reaches_no_torch():
    """Every module the launcher's modules import, transitively and lazily or not, is free of torch."""
    came_from = reachable(MODULES, (name for name in MODULES if area(name) == "launcher"))
    offending = [
        f"{describe(MODULES[name], imported)}, reached by {chain(came_from, name)}"
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
