"""What the report shows, read back from a job's output: the smdebug trial, the confusion
matrices, the profile. Plain dataclasses; no plotting here. (The explained test photos'
index is :class:`dogbreed.job_outputs.ExplanationsIndex`, which the job writes with it.)

The training job writes into its trial, besides the losses smdebug records itself, the
scalars :mod:`dogbreed.job_outputs` names: each training step's batch accuracy and, at the
end of each epoch, that epoch's figures. So every curve in the report comes from the
Debugger data.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from dogbreed.job_outputs import CONFUSION_MATRIX_FILE, EPOCH_SCALAR_PREFIX, EPOCH_SCALARS, STEP_ACCURACY_SCALAR

log = logging.getLogger(__name__)

TOP_CONFUSED_PAIRS = 10


@dataclass
class StepSeries:
    """Loss and batch accuracy of each training step."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


@dataclass
class EpochSeries:
    """Each epoch's train and valid loss and accuracy."""

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    valid_accuracy: list[float] = field(default_factory=list)


def read_curves(trial_dir: Path) -> tuple[StepSeries, EpochSeries]:
    """The per-step and per-epoch curves of a job's smdebug trial."""
    from smdebug.core.modes import ModeKeys  # noqa: PLC0415 - smdebug's import is slow and chatty
    from smdebug.trials import create_trial  # noqa: PLC0415 - smdebug's import is slow and chatty

    trial = create_trial(str(trial_dir))
    losses = trial.tensor_names(collection="losses")
    if not losses:
        raise ValueError(f"the trial {trial_dir} holds no losses")
    loss = trial.tensor(losses[0])
    accuracy = trial.tensor("scalar/" + STEP_ACCURACY_SCALAR)
    train_steps = loss.steps(mode=ModeKeys.TRAIN)
    accuracy_steps = set(accuracy.steps(mode=ModeKeys.TRAIN))
    steps = StepSeries()
    for step in train_steps:
        if step in accuracy_steps:
            steps.steps.append(step)
            steps.loss.append(float(loss.value(step, mode=ModeKeys.TRAIN)))
            steps.accuracy.append(float(accuracy.value(step, mode=ModeKeys.TRAIN)))

    columns = {name: trial.tensor(f"scalar/{EPOCH_SCALAR_PREFIX}{name}") for name in EPOCH_SCALARS}
    epochs = EpochSeries()
    for global_step in columns["epoch"].steps():
        values = {name: float(t.value(global_step)) for name, t in columns.items()}
        epochs.epochs.append(int(values.pop("epoch")))
        for name, value in values.items():
            getattr(epochs, name).append(value)
    return steps, epochs


@dataclass
class ClassResult:
    name: str
    images: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else 0.0


@dataclass
class ConfusedPair:
    true: str
    predicted: str
    count: int


@dataclass
class SplitResults:
    """One split's confusion matrix, its classes worst first and its most confused pairs."""

    split: str
    classes: list[str]
    matrix: list[list[int]]

    @classmethod
    def from_csv(cls, split_dir: Path) -> SplitResults:
        """Read ``<split>/confusion_matrix.csv`` as the training job writes it."""
        with open(split_dir / CONFUSION_MATRIX_FILE, newline="") as f:
            rows = list(csv.reader(f))
        classes = rows[0][1:]
        matrix = [[int(v) for v in row[1:]] for row in rows[1:]]
        if [row[0] for row in rows[1:]] != classes or any(len(r) != len(classes) for r in matrix):
            raise ValueError(f"{split_dir / CONFUSION_MATRIX_FILE} is not a square matrix over one class list")
        return cls(split_dir.name, classes, matrix)

    @property
    def total(self) -> int:
        return sum(map(sum, self.matrix))

    @property
    def accuracy(self) -> float:
        return sum(self.matrix[i][i] for i in range(len(self.classes))) / self.total if self.total else 0.0

    def per_class(self) -> list[ClassResult]:
        """Every class, lowest accuracy first (ties: more images first, then by name)."""
        results = [
            ClassResult(name, sum(row), row[i])
            for i, (name, row) in enumerate(zip(self.classes, self.matrix, strict=True))
        ]
        return sorted(results, key=lambda r: (r.accuracy, -r.images, r.name))

    def confused_pairs(self, top: int = TOP_CONFUSED_PAIRS) -> list[ConfusedPair]:
        """The off-diagonal cells with the most images, e.g. Alaskan malamute -> Siberian husky: 7."""
        pairs = [
            ConfusedPair(self.classes[i], self.classes[j], count)
            for i, row in enumerate(self.matrix)
            for j, count in enumerate(row)
            if i != j and count
        ]
        return sorted(pairs, key=lambda p: (-p.count, p.true, p.predicted))[:top]


@dataclass
class SystemSeries:
    """System utilisation over the job's time, as the figures plot it."""

    seconds: list[float] = field(default_factory=list)
    cpu_per_core: list[list[float]] = field(default_factory=list)  # one list of core percentages per sample
    memory_percent: list[float] = field(default_factory=list)
    disk_read: list[float] = field(default_factory=list)  # bytes/s
    disk_write: list[float] = field(default_factory=list)
    net_recv: list[float] = field(default_factory=list)
    net_sent: list[float] = field(default_factory=list)
    gpu_utilisation: list[float] = field(default_factory=list)  # empty without a GPU
    gpu_memory_percent: list[float] = field(default_factory=list)


@dataclass
class StepSplit:
    """Each training step's time: waiting for data, forward/backward, optimizer."""

    steps: list[int] = field(default_factory=list)
    data_seconds: list[float] = field(default_factory=list)
    forward_backward_seconds: list[float] = field(default_factory=list)
    optimizer_seconds: list[float] = field(default_factory=list)
