"""The hyperparameter search's part of a report: ``tune/trials.json`` as figures and a table.

``python -m dogbreed.tune`` writes ``trials.json`` and its own page (``tune/tune.html``);
the final model's training report, beside it, shows the same section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRIALS_FILE = "trials.json"


@dataclass
class SearchTrial:
    """One trial as the report shows it."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING
    value: float | None  # valid_accuracy of its best epoch (None unless COMPLETE)
    params: dict[str, Any]
    best_epoch: int | None = None
    seconds: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # the epochs' metrics

    @property
    def epochs(self) -> int:
        return len(self.history)

    def params_text(self) -> str:
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())


def _complete_value(trial: SearchTrial) -> float:
    """A COMPLETE trial's value, by which trials rank."""
    assert trial.value is not None, f"trial {trial.number} is COMPLETE without a value"
    return trial.value


@dataclass
class SearchSummary:
    """The whole search: its trials (best first), what it varied and what it cost."""

    objective: str
    searched: list[str]
    seconds: float
    trials: list[SearchTrial]

    @property
    def best(self) -> SearchTrial | None:
        complete = [t for t in self.trials if t.state == "COMPLETE"]
        return max(complete, key=_complete_value) if complete else None

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "objective": self.objective,
            "searched": self.searched,
            "seconds": self.seconds,
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
            "trials": [vars(t) for t in self.trials],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSummary:
        return cls(d["objective"], d["searched"], d["seconds"], [SearchTrial(**t) for t in d["trials"]])

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TRIALS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> SearchSummary:
        return cls.from_dict(json.loads((directory / TRIALS_FILE).read_text()))

    def ranked(self) -> list[SearchTrial]:
        """Complete trials best first, then the pruned and failed ones by number."""
        complete = sorted((t for t in self.trials if t.state == "COMPLETE"), key=lambda t: -_complete_value(t))
        return complete + [t for t in self.trials if t.state != "COMPLETE"]
