"""Model directories carrying ``code/`` (``inference.py``, ``requirements.txt``), for the tests.

``breednote`` is a one-module package that pip installs from a directory without any
network: its build backend is in the directory itself and needs only the standard
library (``requires = []``), so pip has nothing to download for the build.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dogbreed.artifacts import HEAD_FILE, METADATA_FILE, ONNX_FILE

BREEDNOTE_PACKAGE = {
    "pyproject.toml": """\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
""",
    "breednote.py": '''\
"""Installed from code/requirements.txt; inference.py imports it."""

FORMATTED_BY = "breednote 1.0"
''',
    "backend.py": '''\
"""A PEP 517 backend using only the standard library: zips breednote.py into a wheel."""

import base64
import hashlib
import pathlib
import zipfile

NAME, VERSION = "breednote", "1.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"


def _record(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {
        f"{NAME}.py": pathlib.Path(__file__).with_name(f"{NAME}.py").read_bytes(),
        f"{DIST_INFO}/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode(),
        f"{DIST_INFO}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: backend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = [_record(path, data) for path, data in files.items()] + [f"{DIST_INFO}/RECORD,,"]
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / name, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        wheel.writestr(f"{DIST_INFO}/RECORD", "\\n".join(record) + "\\n")
    return name
''',
}

# An output_fn that changes the answer, using the package from requirements.txt.
BREED_ONLY_INFERENCE = '''\
"""code/inference.py: answer only the breed; every other function stays the default."""

import json

import breednote


def output_fn(prediction, accept):
    body = {"breed": prediction["predicted_label"], "formatted_by": breednote.FORMATTED_BY}
    return json.dumps(body), "application/json"
'''


def write_breednote(code_dir: Path) -> None:
    """``code/breednote/`` and a ``code/requirements.txt`` naming it by relative path."""
    for name, text in BREEDNOTE_PACKAGE.items():
        path = code_dir / "breednote" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (code_dir / "requirements.txt").write_text("# a local package, installed without network\n./breednote\n")


def model_with_code(model_dir: Path, dest: Path, files: dict[str, str], link: bool = True) -> Path:
    """``dest`` = the model of ``model_dir`` plus ``code/<name>`` for each of ``files``.

    ``link`` symlinks the model files (for tests on this machine); a container needs copies.
    """
    dest.mkdir(parents=True, exist_ok=True)
    # Every ONNX file model.json may name (model.int8.onnx since the int8 export) and the
    # head of class activation maps (a model exported before them has none).
    names = [METADATA_FILE] + sorted(p.name for p in Path(model_dir).glob("*.onnx"))
    names += [HEAD_FILE] if (Path(model_dir) / HEAD_FILE).is_file() else []
    assert ONNX_FILE in names, f"{model_dir} has no {ONNX_FILE}"
    for name in names:
        if link:
            (dest / name).symlink_to(Path(model_dir, name).resolve())
        else:
            shutil.copy(Path(model_dir, name), dest / name)
    code = dest / "code"
    code.mkdir(exist_ok=True)
    for name, text in files.items():
        (code / name).write_text(text)
    return dest
