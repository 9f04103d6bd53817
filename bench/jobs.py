"""Run dogbreed's own commands (the training job, the search) as a user would, timed end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DOGBREED_TEST_DATA", REPO.parent / "shared" / "data" / "dogs-3breeds"))


def channel_args(data: Path, work: Path) -> list[str]:
    test = data / "test" if (data / "test").is_dir() else work / "no-test"
    return ["--train", str(data / "train"), "--valid", str(data / "valid"), "--test", str(test),
            "--model-dir", str(work / "model"), "--output-data-dir", str(work / "data"),
            "--checkpoint-dir", str(work / "checkpoints")]


def timed(module: str, args: list[str], work: Path) -> tuple[float, str]:
    """Run ``python -m module args`` with a fresh /opt/ml under ``work``; wall seconds and its log."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "code"), "DOGBREED_OPT_ML": str(work)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"python -m {module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def metrics(work: Path) -> dict:
    return json.loads((work / "data" / "metrics.json").read_text())
