"""The test suite's own arrows: no test module imports another test module.

A helper that several test files share lives in a helper module beside them
(``tests/launcher/cli_args.py``, ``tests/docker/serve_container.py``,
``tests/unit/training/corrupt_images.py``, ...) or in a ``conftest.py``; importing it from
``test_x.py`` would run (and couple to) that file's module-level setup, and hide the helper
among tests. Read with ``ast``, so relative and function-level imports count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(source: str, package: str) -> Iterator[str]:
    """The dotted name of every module ``source`` (a module of ``package``) imports, and of every name it
    imports from one (which may itself be a module)."""
    parts = package.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            yield module
            for alias in node.names:
                yield f"{module}.{alias.name}"


def imports_of_test_modules(source: str, package: str) -> list[str]:
    """The test modules of this suite that ``source`` imports."""
    return sorted({name for name in imported_modules(source, package)
                   if name.split(".")[0] == "tests" and any(part.startswith("test_") for part in name.split("."))})


def test_every_form_of_import_is_seen():
    source = ("from .test_cli import OUT\nfrom tests.docker import test_serve_container\n"
              "import tests.unit.test_images\nfrom . import cli_args\n"
              "def f():\n    from ..unit.training.test_data import make_split\n")
    assert imports_of_test_modules(source, "tests.launcher") == [
        "tests.docker.test_serve_container", "tests.launcher.test_cli", "tests.launcher.test_cli.OUT",
        "tests.unit.test_images", "tests.unit.training.test_data", "tests.unit.training.test_data.make_split",
    ]


def test_no_test_module_imports_another():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        package = ".".join(path.relative_to(TESTS.parent).parts[:-1])
        for name in imports_of_test_modules(path.read_text(encoding="utf-8"), package):
            offenders.append(f"{path.relative_to(TESTS.parent)} imports {name}")
    assert not offenders, "move what they share into a helper module:\n" + "\n".join(offenders)
