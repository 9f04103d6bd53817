"""tests/prerequisites.py: a missing prerequisite fails under CI and skips elsewhere, in a test or a module."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.prerequisites import in_ci, require


@pytest.mark.parametrize("value, ci", [("true", True), ("1", True), ("yes", True), ("", False), ("false", False),
                                       ("0", False), (None, False)])
def test_what_counts_as_ci(monkeypatch, value, ci):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_a_missing_prerequisite_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^frobnicator is not installed: apt-get install frob \(CI must"):
        require(False, "frobnicator is not installed: apt-get install frob")


def test_a_missing_prerequisite_skips_elsewhere(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^frobnicator is not installed: apt-get install frob$"):
        require(False, "frobnicator is not installed: apt-get install frob")


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_present_prerequisite_is_silent(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    require(True, "never shown")


def test_a_test_module_that_lacks_one_errors_under_ci_and_skips_elsewhere(tmp_path):
    """As the launcher tests' ``require_launcher_venv()`` does at their top."""
    (tmp_path / "test_needs_frob.py").write_text(
        "from tests.prerequisites import missing\n"
        "missing('frob is not installed: apt-get install frob')\n"
        "def test_frob():\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    runs = {}
    for ci in ("true", None):
        run_env = dict(env, CI=ci) if ci else env
        runs[ci] = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                                   str(tmp_path / "test_needs_frob.py")], capture_output=True, text=True,
                                  cwd=tmp_path, env=run_env, timeout=120)
    assert runs["true"].returncode != 0 and "frob is not installed" in runs["true"].stdout, runs["true"].stdout
    assert "1 error" in runs["true"].stdout, runs["true"].stdout
    # A module skipped whole leaves no test to run: pytest's exit status 5, not a failure.
    assert runs[None].returncode == pytest.ExitCode.NO_TESTS_COLLECTED, runs[None].stdout
    assert "1 skipped" in runs[None].stdout, runs[None].stdout
    assert "frob is not installed: apt-get install frob" in runs[None].stdout
