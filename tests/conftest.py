"""Fixtures shared by every test: where the real photos live."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.prerequisites import require

REPO = Path(__file__).resolve().parents[1]
# 583 real photos of three breeds in the dogImages layout, kept beside the repository.
DOGS3 = Path(os.environ.get("DOGBREED_TEST_DATA", REPO.parent / "shared" / "data" / "dogs-3breeds"))


@pytest.fixture(scope="session")
def dogs3() -> Path:
    """The dogs-3breeds dataset; CI must have it, a developer's machine may not."""
    require((DOGS3 / "train").is_dir(),
            f"test data not found at {DOGS3}: set DOGBREED_TEST_DATA to a dogs-3breeds folder (train/, valid/, test/)")
    return DOGS3


@pytest.fixture(scope="session")
def real_photos(dogs3) -> list[Path]:
    """A few real photos from each class of the validation split, in a fixed order."""
    photos = []
    for class_dir in sorted((dogs3 / "valid").iterdir()):
        photos += sorted(class_dir.glob("*.jpg"))[:4]
    return photos


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
