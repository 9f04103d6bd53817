"""The job's progress as a typed :class:`TrainingState`, saved to ``checkpoint.pt``.

SageMaker syncs ``/opt/ml/checkpoints`` with S3 and restarts an interrupted spot job
with the files back in place. A checkpoint is written after every epoch and when
SIGTERM stops the job, wherever it is: mid-epoch it holds the weights and running sums
after the last whole batch, so a restarted job continues from that batch and ends
with the very model the uninterrupted job would have (bit for bit on the CPU).
Writes are atomic: a job killed while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from dogbreed.training.failure import TrainingError
from dogbreed.training.loop import Learner, PassTotals
from dogbreed.training.metrics import EpochMetrics

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 2
_TEMP_PREFIX = ".checkpoint-"


@dataclass(frozen=True)
class JobIdentity:
    """What a checkpoint must share with a job to resume it: it trains the same thing the same way."""

    arch: str
    class_dirs: tuple[str, ...]
    freeze: str
    optimizer: str
    lr_scheduler: str
    features: bool = False  # the head trained on cached features: the checkpoint holds fc alone


@dataclass
class BestEpoch:
    """The epoch with the lowest validation loss so far: its weights become the model."""

    epoch: int
    valid_loss: float
    valid_matrix: list[list[int]]
    weights: dict[str, torch.Tensor]


@dataclass
class PartialEpoch:
    """The epoch a stopped job was in: how far training got, and whether it was done."""

    epoch: int
    totals: PassTotals
    trained: bool = False  # True: stopped during validation, the training pass is complete


@dataclass
class TrainingState:
    """Everything about a job's progress except the network's and optimizer's own states."""

    identity: JobIdentity
    epoch: int = 0  # the last completed epoch
    history: list[EpochMetrics] = field(default_factory=list)
    best: BestEpoch | None = None
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    partial: PartialEpoch | None = None
    unreadable: dict[str, dict[str, str]] = field(default_factory=dict)  # split -> path -> reason
    debugger_steps: dict[str, int] = field(default_factory=dict)  # the smdebug trial's step numbers

    def to_dict(self) -> dict[str, Any]:
        """Plain types and tensors only, as ``torch.load(weights_only=True)`` reads them."""
        partial = self.partial
        return {
            "identity": {**asdict(self.identity), "class_dirs": list(self.identity.class_dirs)},
            "epoch": self.epoch,
            "history": [h.to_dict() for h in self.history],
            "best": None if self.best is None else vars(self.best).copy(),
            "bad_epochs": self.bad_epochs,
            "partial": None
            if partial is None
            else {
                "epoch": partial.epoch,
                "totals": partial.totals.to_dict(),
                "trained": partial.trained,
            },
            "unreadable": self.unreadable,
            "debugger_steps": self.debugger_steps,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: torch.device) -> TrainingState:
        partial = d["partial"]
        identity = d["identity"]
        return cls(
            identity=JobIdentity(**{**identity, "class_dirs": tuple(identity["class_dirs"])}),
            epoch=d["epoch"],
            history=[EpochMetrics(**h) for h in d["history"]],
            best=None if d["best"] is None else BestEpoch(**d["best"]),
            bad_epochs=d["bad_epochs"],
            partial=None
            if partial is None
            else PartialEpoch(partial["epoch"], PassTotals.from_dict(partial["totals"], device), partial["trained"]),
            unreadable=d["unreadable"],
            debugger_steps=d["debugger_steps"],
        )

    @property
    def best_valid_loss(self) -> float:
        return self.best.valid_loss if self.best else math.inf


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    # legacy=True (the default): the tuple form; numpy types the call as either form.
    state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, pos, has_gauss, gauss = state
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


def save_checkpoint(checkpoint_dir: Path, state: TrainingState, learner: Learner) -> Path:
    """Write ``state`` and the learner's states to ``checkpoint.pt`` atomically."""
    scheduler = learner.scheduler
    return write_atomically(
        Path(checkpoint_dir),
        {
            "format_version": FORMAT_VERSION,
            "state": state.to_dict(),
            "model": learner.trained.state_dict(),
            "optimizer": learner.optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": learner.scaler.state_dict(),
            "rng": rng_state(),
        },
    )


def write_atomically(checkpoint_dir: Path, payload: dict[str, Any], name: str = CHECKPOINT_FILE) -> Path:
    """``torch.save`` to a temporary file, fsync, rename over ``name``, fsync the folder.

    A kill at any moment leaves either the old or the new checkpoint, never half of one;
    temporary files left by a killed job are removed here.
    """
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for stale in checkpoint_dir.glob(f"{_TEMP_PREFIX}*.tmp"):
        stale.unlink(missing_ok=True)
    path = checkpoint_dir / name
    fd, tmp = tempfile.mkstemp(dir=checkpoint_dir, prefix=_TEMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, sigchld_deferred():
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(checkpoint_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
    return path


@contextlib.contextmanager
def sigchld_deferred() -> Iterator[None]:
    """Hold back SIGCHLD's Python handler for the duration.

    torch's DataLoader raises from its SIGCHLD handler when a worker dies, wherever the
    main thread is: inside ``torch.save`` that leaves a broken zip writer and an error that
    no longer names the worker. Deferred, the save completes and the worker's error follows.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGCHLD)
    if not callable(previous):
        yield
        return
    pending: list[tuple[int, Any]] = []
    signal.signal(signal.SIGCHLD, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)
        for signum, frame in pending:
            previous(signum, frame)


def load_checkpoint(checkpoint_dir: Path, identity: JobIdentity, learner: Learner) -> TrainingState | None:
    """Restore ``learner`` from ``checkpoint.pt`` and return the saved state; None without a checkpoint.

    Raises :class:`TrainingError` for an unreadable checkpoint or one of another job.
    """
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(
            f"cannot read the checkpoint {path} ({type(exc).__name__}: {exc}); delete it to start afresh"
        ) from exc
    if not isinstance(saved, dict) or saved.get("format_version") != FORMAT_VERSION:
        raise TrainingError(
            f"the checkpoint {path} was written by another version of this training code; delete it to start afresh"
        )
    state = TrainingState.from_dict(saved["state"], learner.device)
    check_identity(path, state.identity, identity)
    learner.trained.load_state_dict(saved["model"])
    learner.optimizer.load_state_dict(saved["optimizer"])
    if learner.scheduler is not None and saved["scheduler"] is not None:
        learner.scheduler.load_state_dict(saved["scheduler"])
    learner.scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    return state


def check_identity(path: Path, theirs: JobIdentity, ours: JobIdentity) -> None:
    """:class:`TrainingError` naming the first setting in which the checkpoint's job differs."""
    for key, our_value in asdict(ours).items():
        their_value = getattr(theirs, key)
        if their_value == our_value:
            continue
        if key == "class_dirs":
            their_value = f"{len(their_value)} classes starting {list(their_value[:3])}"
            our_value = f"{len(our_value)} classes starting {list(our_value[:3])}"
        raise TrainingError(
            f"the checkpoint {path} is from a different job: its {key} is {their_value}, this job's is "
            f"{our_value}; use another checkpoint location or delete it"
        )
