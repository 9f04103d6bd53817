"""Broken pictures among good ones, for the tests of unreadable images (data loading, the job, the int8 export)."""

from __future__ import annotations

from pathlib import Path


def add_corrupt_images(folder: Path) -> None:
    """A zero-byte file, text renamed .jpg and a truncated JPEG (whose header is fine)."""
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a picture")
    good = next(folder.glob("0*.jpg")).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
