"""The job's figures: each epoch's, and the evaluation reports beside ``metrics.json``.

An epoch's figures are logged as a metric line (:mod:`dogbreed.metric_lines`, whose regexes
SageMaker reads), kept in ``metrics.json``'s history and saved in checkpoints. Each evaluated
split gets a confusion matrix and its per-class accuracy as CSV, which the report reads back.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dogbreed.job_outputs import CONFUSION_MATRIX_FILE, METRICS_FILE
from dogbreed.metric_lines import format_metrics


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
        """The metric line SageMaker's regexes read (:data:`dogbreed.metric_lines.EPOCH_METRICS`, in that order)."""
        return format_metrics(self.to_dict())


def confusion_matrix(labels: Iterable[int], predictions: Iterable[int], num_classes: int) -> list[list[int]]:
    """``matrix[true][predicted]`` counts, as plain lists (they go into checkpoints and JSON)."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for true, predicted in zip(labels, predictions, strict=True):
        matrix[int(true)][int(predicted)] += 1
    return matrix


def write_confusion_csvs(output_dir: Path, split: str, counts: Sequence[Sequence[int]], classes: Sequence[str]) -> None:
    """``<output_dir>/<split>/confusion_matrix.csv`` and ``per_class_accuracy.csv``."""
    directory = Path(output_dir) / split
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / CONFUSION_MATRIX_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, counts, strict=True):
            writer.writerow([name, *row])
    with open(directory / "per_class_accuracy.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "images", "correct", "accuracy"])
        for i, (name, row) in enumerate(zip(classes, counts, strict=True)):
            total = sum(row)
            writer.writerow([name, total, row[i], f"{row[i] / total:.4f}" if total else ""])


def write_metrics_json(output_dir: Path, data: Mapping[str, Any]) -> Path:
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
