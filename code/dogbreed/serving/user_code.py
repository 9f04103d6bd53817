"""The model's own code: ``code/`` inside ``model.tar.gz`` (``/opt/ml/model/code``).

SageMaker's framework containers let a model archive carry ``code/inference.py``, whose
``model_fn``/``input_fn``/``predict_fn``/``output_fn``/``transform_fn`` replace the
container's defaults, and ``code/requirements.txt``, installed before the model server
starts. This module finds that directory, makes it importable and installs the
requirements; :mod:`dogbreed.serving.transformer` (the toolkit's) picks the functions.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

CODE_DIR = "code"
REQUIREMENTS_FILE = "requirements.txt"
# pip's output lines kept for the error message when it fails.
_TAIL_LINES = 20


class RequirementsError(RuntimeError):
    """``code/requirements.txt`` could not be installed; the message says why."""


def code_dir(model_dir: str | os.PathLike) -> Path:
    """``<model_dir>/code``, whether or not it exists."""
    return Path(model_dir) / CODE_DIR


def make_importable(model_dir: str | os.PathLike) -> None:
    """Put ``<model_dir>/code`` first on ``sys.path``, once, so ``inference`` imports from it.

    The toolkit only prepends it to ``PYTHONPATH``, which reaches child processes, not
    the running worker.
    """
    path = str(code_dir(model_dir))
    if path not in sys.path:
        sys.path.insert(0, path)


def install_requirements(model_dir: str | os.PathLike, python: str = sys.executable) -> bool:
    """``pip install -r code/requirements.txt`` into ``python``'s environment, if the file exists.

    pip runs in ``code/``, so relative paths in the file (``./mypackage``) mean paths
    inside ``code/``. Its output goes to the log as it comes. Returns False when there is
    no file, True once installed; raises :class:`RequirementsError` with pip's exit code
    and its error lines when the install fails, so the server never starts without them.
    """
    directory = code_dir(model_dir)
    requirements = directory / REQUIREMENTS_FILE
    if not requirements.is_file():
        return False
    environment = Path(python).parent.parent  # bin/python's environment, /opt/venv in the image
    if _read_only(environment):
        raise RequirementsError(
            f"cannot install {requirements}: {environment} is on a read-only filesystem (as under "
            f"SageMaker Serverless Inference); build those packages into the image instead"
        )
    command = [
        python,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--root-user-action=ignore",
        "-r",
        REQUIREMENTS_FILE,
    ]
    logger.info("installing %s: %s", requirements, " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        process = subprocess.Popen(
            command,
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise RequirementsError(f"could not run pip to install {requirements}: {exc}") from exc
    assert process.stdout is not None, "started with stdout=PIPE"
    with process:
        for line in process.stdout:
            line = line.rstrip()
            logger.info("pip: %s", line)
            tail.append(line)
    if process.returncode != 0:
        errors = [line for line in tail if line.startswith("ERROR")] or list(tail)[-3:]
        raise RequirementsError(
            f"installing {requirements} failed (pip exited {process.returncode}): " + " ".join(errors)
        )
    logger.info("installed %s", requirements)
    return True


def _read_only(path: Path) -> bool:
    """Whether ``path`` is on a filesystem mounted read-only; False where it cannot be told (pip will say)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
