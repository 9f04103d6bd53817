"""What a test needs from the machine (test data, Chromium, docker-registry, the launcher venv), checked one way.

CI must have all of it, so there a missing prerequisite fails the test; a developer's machine
may lack some, so there the test skips. Either way the message says what is missing and how
to get it. CI is any non-empty ``CI`` other than 0/false/no (CI services set ``CI=true``, and
so does ``.ci/run``).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is CI's, which must have every prerequisite."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str) -> NoReturn:
    """Fail under CI, skip elsewhere; ``what`` says what is missing and how to install it.

    Works in a test, a fixture, or at a test module's top level (there, under CI, as a collection error).
    """
    if in_ci():
        pytest.fail(f"{what} (CI must have it)", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require(present: bool, what: str) -> None:
    """:func:`missing` unless ``present``."""
    if not present:
        missing(what)
