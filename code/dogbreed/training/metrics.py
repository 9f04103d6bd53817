"""The metric lines the job logs, the regexes SageMaker reads them with, and evaluation reports.

Each epoch logs one line of ``name=value`` pairs, e.g.::

    epoch=3 train_loss=0.4123 train_accuracy=0.8512 valid_loss=0.3901 valid_accuracy=0.8721 images_per_sec=312.4 epoch_seconds=12.1

and the end of the job ``test_loss=0.4011 test_accuracy=0.8650`` and, with the int8 export,
``fp32_valid_accuracy=0.9150 int8_valid_accuracy=0.9120`` (both ONNX models, ONNX Runtime,
on the validation split). ``METRIC_DEFINITIONS``
is the ``metric_definitions`` argument of a SageMaker estimator for this image.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from dogbreed.job_outputs import CONFUSION_MATRIX_FILE, METRICS_FILE

# No torch here: the SageMaker launcher, which has no torch, imports METRIC_DEFINITIONS.

EPOCH_METRICS = (
    "epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "images_per_sec", "epoch_seconds",
)
FINAL_METRICS = ("test_loss", "test_accuracy", "fp32_valid_accuracy", "int8_valid_accuracy")
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def _regex(name: str) -> str:
    # The leading \b keeps valid_loss from matching inside another name; "_" is a word
    # character, so "train_loss" never matches as "loss".
    return rf"\b{name}={_NUMBER}"


METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": name, "Regex": _regex(name)} for name in (*EPOCH_METRICS, *FINAL_METRICS)
]

_FORMATS = {"epoch": "{:d}", "images_per_sec": "{:.1f}", "epoch_seconds": "{:.1f}"}


def format_metrics(values: Mapping[str, float]) -> str:
    """``name=value`` pairs separated by spaces, losses and accuracies to 4 decimals."""
    return " ".join(f"{k}={_FORMATS.get(k, '{:.4f}').format(v)}" for k, v in values.items())


@dataclass
class EpochMetrics:
    """One epoch's figures: its metric line, and one entry of ``metrics.json``'s history."""

    epoch: int
    train_loss: float
    train_accuracy: float
    valid_loss: float
    valid_accuracy: float
    images_per_sec: float
    epoch_seconds: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def line(self) -> str:
        """The metric line SageMaker's regexes read (:data:`EPOCH_METRICS`, in that order)."""
        return format_metrics(self.to_dict())


def confusion_matrix(labels: Iterable[int], predictions: Iterable[int], num_classes: int) -> list[list[int]]:
    """``matrix[true][predicted]`` counts, as plain lists (they go into checkpoints and JSON)."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for true, predicted in zip(labels, predictions):
        matrix[int(true)][int(predicted)] += 1
    return matrix


def write_reports(output_dir: Path, split: str, counts: Sequence[Sequence[int]], classes: Sequence[str]) -> None:
    """``<output_dir>/<split>/confusion_matrix.csv`` and ``per_class_accuracy.csv``."""
    directory = Path(output_dir) / split
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / CONFUSION_MATRIX_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, counts):
            writer.writerow([name, *row])
    with open(directory / "per_class_accuracy.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "images", "correct", "accuracy"])
        for i, (name, row) in enumerate(zip(classes, counts)):
            total = sum(row)
            writer.writerow([name, total, row[i], f"{row[i] / total:.4f}" if total else ""])


def write_metrics_json(output_dir: Path, data: Mapping[str, Any]) -> Path:
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
