"""``code/requirements.txt``: installed with pip before anything starts; a failure says why.

pip runs for real, offline, into a throwaway virtual environment (never this one), on a
package directory inside ``code/`` named by a relative path.
"""

import os
import subprocess
import sys
import venv
from types import SimpleNamespace

import pytest

from dogbreed.serving import user_code
from dogbreed.serving.user_code import RequirementsError, install_requirements

from .model_code import write_breednote


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> str:
    """The interpreter of a fresh virtual environment with pip (bundled with Python: offline)."""
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(root)
    return str(root / "bin" / "python")


def imports(python: str, module: str) -> str | None:
    """``module.FORMATTED_BY`` as ``python`` imports it, None if it cannot."""
    proc = subprocess.run([python, "-c", f"import {module}; print({module}.FORMATTED_BY)"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_a_local_package_is_installed_without_network(tmp_path, python):
    write_breednote(tmp_path / "code")
    assert imports(python, "breednote") is None
    assert install_requirements(tmp_path, python=python) is True
    assert imports(python, "breednote") == "breednote 1.0"


def test_no_requirements_file_installs_nothing(tmp_path, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(subprocess, "Popen", no_pip)
    assert install_requirements(tmp_path) is False
    (tmp_path / "code").mkdir()
    assert install_requirements(tmp_path) is False


def test_a_failing_install_raises_with_pips_error(tmp_path, python):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "requirements.txt").write_text("./not-here\n")
    with pytest.raises(RequirementsError) as info:
        install_requirements(tmp_path, python=python)
    message = str(info.value)
    assert "requirements.txt failed (pip exited 1)" in message
    assert "ERROR" in message and "not-here" in message


def test_pip_that_cannot_run_is_an_error(tmp_path):
    write_breednote(tmp_path / "code")
    with pytest.raises(RequirementsError, match="could not run pip"):
        install_requirements(tmp_path, python=str(tmp_path / "no-python"))


def test_a_read_only_environment_is_refused_in_one_line_before_pip_runs(tmp_path, python, monkeypatch):
    # As under SageMaker Serverless Inference: the root filesystem, /opt/venv included, is read-only.
    write_breednote(tmp_path / "code")
    read_only = os.statvfs(tmp_path)
    monkeypatch.setattr(user_code.os, "statvfs", lambda path: SimpleNamespace(f_flag=read_only.f_flag | os.ST_RDONLY))
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: pytest.fail("pip must not run"))
    with pytest.raises(RequirementsError, match=r"requirements.txt: .*venv\d* is on a read-only filesystem") as info:
        install_requirements(tmp_path, python=python)
    assert "\n" not in str(info.value)


def test_make_importable_puts_code_first_once(tmp_path):
    user_code.make_importable(tmp_path)
    user_code.make_importable(tmp_path)
    assert sys.path[0] == str(tmp_path / "code")
    assert sys.path.count(str(tmp_path / "code")) == 1
