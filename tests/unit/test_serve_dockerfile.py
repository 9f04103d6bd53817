"""The serving image copies exactly the code serving runs: serving/ and the bottom modules it imports.

docker/serve/Dockerfile names its files one by one, so a new import in serving/ of a bottom
module it does not copy would break the image only when it starts; here it fails first, read
from the source (tests/unit/package_imports.py). The other way round, a file copied that
serving never imports is dead weight, and fails too. tests/docker/test_serve_image.py checks
the built image holds no other code.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

from tests.conftest import REPO
from tests.unit.package_imports import PACKAGE_DIR, area, chain, module_name, parse_package, reachable

DOCKERFILE = REPO / "docker" / "serve" / "Dockerfile"
CODE = PACKAGE_DIR.parent  # code/, which the image puts at /opt/dogbreed (its PYTHONPATH)
IMAGE_CODE = PurePosixPath("/opt/dogbreed")


def instructions(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions as words, continuation lines joined, comments dropped."""
    joined = []
    current = ""
    for line in dockerfile.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(shlex.split(current + line))
        current = ""
    return joined


def package_copies(dockerfile: str) -> dict[str, PurePosixPath]:
    """What the final stage's COPY instructions take from code/: each source -> where it lands in the image.

    A directory's contents land in the destination; a file lands in it when it ends with a
    slash, else as it.
    """
    stages = [[]]  # the instructions of each FROM
    for words in instructions(dockerfile):
        if words[0].upper() == "FROM":
            stages.append([])
        stages[-1].append(words)
    copies = {}
    for words in stages[-1]:
        if words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        *sources, destination = [w for w in words[1:] if not w.startswith("--")]
        for source in sources:
            if not source.startswith(f"{CODE.name}/"):
                continue
            is_dir = (REPO / source).is_dir()
            into = destination.endswith("/") and not is_dir
            copies[source] = PurePosixPath(destination) / (Path(source).name if into else "")
    return copies


def copied_files(copies: dict[str, PurePosixPath]) -> dict[Path, PurePosixPath]:
    """Every file the copies take (less the caches .dockerignore leaves out) -> its path in the image."""
    files = {}
    for source, destination in copies.items():
        path = REPO / source
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    files[file] = destination / file.relative_to(path).as_posix()
        else:
            files[path] = destination
    return files


MODULES = parse_package()
COPIES = package_copies(DOCKERFILE.read_text(encoding="utf-8"))
FILES = copied_files(COPIES)


def test_the_dockerfile_is_read():
    assert "code/dogbreed/serving" in COPIES, COPIES
    assert PACKAGE_DIR / "serving" / "serve.py" in FILES and PACKAGE_DIR / "__init__.py" in FILES


def test_copies_keep_the_package_layout():
    """A file of code/ lands at the same place under /opt/dogbreed, the image's PYTHONPATH."""
    misplaced = [
        f"{path.relative_to(REPO)} -> {there}"
        for path, there in FILES.items()
        if there != IMAGE_CODE / path.relative_to(CODE).as_posix()
    ]
    assert not misplaced, "copied to the wrong place:\n" + "\n".join(misplaced)


def test_the_image_holds_serving_and_exactly_the_modules_it_imports():
    came_from = reachable(MODULES, (name for name in MODULES if area(name) == "serving"))
    copied = {module_name(path)[0] for path in FILES if path.suffix == ".py"}
    missing = [f"{name}, reached by {chain(came_from, name)}" for name in sorted(came_from.keys() - copied)]
    unused = sorted(copied - came_from.keys())
    assert not missing, f"serving imports modules {DOCKERFILE.relative_to(REPO)} does not copy:\n" + "\n".join(missing)
    assert not unused, f"{DOCKERFILE.relative_to(REPO)} copies modules serving never imports: {unused}"


def test_every_serving_module_imports_from_what_the_image_copies(tmp_path):
    """Imported for real from a copy laid out as in the image: an import the source reader cannot see
    (importlib, __import__) of a module left out fails here too."""
    for path, there in FILES.items():
        target = tmp_path / there.relative_to(IMAGE_CODE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    serving = sorted(name for name in MODULES if area(name) == "serving")
    script = (
        "import importlib, sys\n"
        f"for name in {serving!r}:\n"
        "    importlib.import_module(name)\n"
        "import dogbreed\n"
        "print(dogbreed.__file__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip()) == tmp_path / "dogbreed" / "__init__.py", proc.stdout
