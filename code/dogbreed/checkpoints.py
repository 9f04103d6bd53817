"""Per-epoch checkpoints for managed spot training, and a graceful stop on SIGTERM.

SageMaker syncs ``/opt/ml/checkpoints`` with S3 and restarts an interrupted spot job
with the files back in place; a restarted job resumes after the last completed epoch.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogbreed.failure import TrainingError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
# A checkpoint only resumes a job that trains the same thing the same way.
MUST_MATCH = ("arch", "class_dirs", "freeze", "optimizer", "lr_scheduler")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(checkpoint_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``checkpoint.pt`` atomically (temp file + rename): a kill mid-write leaves the old one."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=checkpoint_dir, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(checkpoint_dir: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``checkpoint_dir``, or None; :class:`TrainingError` if it belongs to another job.

    ``expected`` holds the :data:`MUST_MATCH` values of this job.
    """
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(
            f"cannot read the checkpoint {path} ({type(exc).__name__}: {exc}); delete it to start afresh"
        ) from exc
    for key in MUST_MATCH:
        if state.get(key) != expected[key]:
            theirs, ours = state.get(key), expected[key]
            if isinstance(ours, list):
                theirs = f"{len(theirs or [])} classes" + (f" starting {theirs[:3]}" if theirs else "")
                ours = f"{len(ours)} classes starting {ours[:3]}"
            raise TrainingError(
                f"the checkpoint {path} is from a different job: its {key} is {theirs}, this job's is "
                f"{ours}; use another checkpoint location or delete it"
            )
    return state


class StopRequested(Exception):
    """Raised at a batch boundary after SIGTERM (a stopped job or a spot interruption)."""


class GracefulStop:
    """Installs a SIGTERM handler that only sets a flag; the training loop polls :meth:`check`."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def install(self) -> "GracefulStop":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def check(self) -> None:
        """Raise :class:`StopRequested` if SIGTERM has arrived."""
        if self.requested:
            raise StopRequested()
