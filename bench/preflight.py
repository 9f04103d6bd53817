"""What a bench program checks and says before it measures: the CPU, the photos, the Docker images.

Each check stops the program with one line naming what is missing and how to get it, so a
fresh clone learns what to do (``make venv`` is bench/venv-python's to say).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def cpu_description() -> str:
    """The CPU model, the cores this process may use, and the vector extensions that matter to ORT."""
    model, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    isa = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags)
    return f"{model}, {len(os.sched_getaffinity(0))} cores ({isa or 'no AVX2'})"


def require_photos(program: str, folder: Path, splits: tuple[str, ...] = ("train", "valid")) -> None:
    """Exit unless ``folder`` holds ``splits`` (or, with no splits, is itself a folder)."""
    missing = [s for s in splits if not (folder / s).is_dir()] if splits else ([] if folder.is_dir() else ["."])
    if missing:
        wanted = ", ".join(f"{s}/" for s in splits) or "a folder of class folders"
        raise SystemExit(f"{program}: no photos at {folder} (wants {wanted}): set DOGBREED_TEST_DATA to a "
                         f"dogs-3breeds folder (default: ../shared/data/dogs-3breeds beside the repository)")


def require_images(program: str, *images: str) -> None:
    """Exit unless Docker answers and has every one of ``images`` (``make build`` makes dogbreed's)."""
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
            raise SystemExit(f"{program}: no Docker engine answers (`docker info` fails): start one")
    except FileNotFoundError:
        raise SystemExit(f"{program}: needs Docker (engine and compose v2): no `docker` command") from None
    for image in images:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60).returncode != 0:
            raise SystemExit(f"{program}: image {image} is missing: run `make build` first")
