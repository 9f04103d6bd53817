"""How a training job fails: one line in ``/opt/ml/output/failure``, then a non-zero exit.

SageMaker shows the first 1024 characters of the failure file as the job's
``FailureReason``, so the file gets a single readable line and the log gets the rest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_FAILURE = 1  # an expected failure (TrainingError) or an unexpected exception
EXIT_CONFIG = 2  # bad hyperparameter or command line, as argparse does
EXIT_SIGTERM = 143  # 128 + SIGTERM: the job was stopped; not a failure
FAILURE_REASON_LIMIT = 1024


class TrainingError(Exception):
    """An expected failure with a reason the user can act on (missing data, no weights...)."""

    exit_code = EXIT_FAILURE


class ConfigError(TrainingError):
    """A bad hyperparameter, command-line flag or configuration file."""

    exit_code = EXIT_CONFIG


def failure_reason(exc: BaseException) -> str:
    """One line: the message of a :class:`TrainingError`, else ``Type: message``."""
    text = str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:FAILURE_REASON_LIMIT] or type(exc).__name__


def write_failure(path: str | os.PathLike, reason: str) -> None:
    """Write ``reason`` to the failure file; never raises (the job is failing already)."""
    try:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason + "\n")
    except OSError as exc:
        log.error("could not write the failure file %s: %s", path, exc)
