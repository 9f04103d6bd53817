"""What a training job leaves for its report: the output's file and folder names, and its trial's scalars.

The job writes these (:mod:`dogbreed.training`, :mod:`dogbreed.tune`) and the report reads
them back (:mod:`dogbreed.report`, also ``python -m dogbreed.report`` on a downloaded output),
as does the launcher (:mod:`dogbreed.launcher`), so the names belong to none of them.

Paths are relative to the job's output data folder, ``/opt/ml/output/data``, which
SageMaker uploads as ``output.tar.gz``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPORT_FILE = "report.html"  # the training report (dogbreed.report.page)
METRICS_FILE = "metrics.json"  # the final figures, every epoch's, the classes, the hyperparameters
CONFUSION_MATRIX_FILE = "confusion_matrix.csv"  # in a folder per evaluated split: valid/, test/
TRIAL_DIR = "debug-output"  # the job's own smdebug trial (SageMaker Debugger's goes to S3)
PROFILE_DIR = "profile"  # in the format of dogbreed.profile_format
# Class activation maps of a few test photos: JPEG overlays, and an index listing them
# (ExplanationsIndex, below).
EXPLANATIONS_DIR = "explanations"
EXPLANATIONS_INDEX_FILE = "index.json"  # inside EXPLANATIONS_DIR
# A features job's cache of the frozen backbone's outputs, one file per split; the launcher
# hands it to later jobs as their features channel.
FEATURES_DIR = "features"
SEARCH_DIR = "tune"  # python -m dogbreed.tune's study, its trials and its page (dogbreed.report.search)
DATA_CHECK_FILE = "data_check.json"  # the data check before the first epoch (DataCheck, below)

# The scalars the job saves into its smdebug trial (hook.save_scalar) besides the losses
# smdebug records itself, so that every curve in the report comes from the Debugger data.
STEP_ACCURACY_SCALAR = "train/batch_accuracy"  # each training step's batch accuracy
# At the end of each epoch, that epoch's figures, each named EPOCH_SCALAR_PREFIX + its name.
EPOCH_SCALAR_PREFIX = "epoch/"
EPOCH_SCALARS = ("epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy")


# --- explanations/index.json ---------------------------------------------------------

# The kinds of explained photo.
MISTAKE = "mistake"  # a wrong answer: the map of the class it predicted, then of its true class
CORRECT = "correct"  # a right answer: the map of the class it predicted


@dataclass(frozen=True)
class ClassMap:
    """One class's activation map over a photo: its overlay, a JPEG in :data:`EXPLANATIONS_DIR`."""

    class_index: int
    label: str
    file: str
    box: tuple[float, float, float, float]  # the map's hottest region, in the photo's pixels
    logit: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, rounded as the index stores it."""
        return {
            "class": self.class_index,
            "label": self.label,
            "file": self.file,
            "box": [round(v, 1) for v in self.box],
            "logit": round(self.logit, 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassMap:
        x0, y0, x1, y1 = (float(v) for v in d["box"])
        return cls(int(d["class"]), d["label"], d["file"], (x0, y0, x1, y1), float(d["logit"]))


@dataclass(frozen=True)
class ExplainedPhoto:
    """A test photo the job explained: a :data:`MISTAKE` or a :data:`CORRECT` answer, with its maps."""

    kind: str
    image: str  # its path in the split
    true: int
    true_label: str
    predicted: int
    predicted_label: str
    probability: float  # of the predicted class
    true_probability: float
    maps: tuple[ClassMap, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, rounded as the index stores it."""
        return {
            "kind": self.kind,
            "image": self.image,
            "true": self.true,
            "true_label": self.true_label,
            "predicted": self.predicted,
            "predicted_label": self.predicted_label,
            "probability": round(self.probability, 4),
            "true_probability": round(self.true_probability, 4),
            "maps": [m.to_dict() for m in self.maps],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExplainedPhoto:
        return cls(
            d["kind"],
            d["image"],
            int(d["true"]),
            d["true_label"],
            int(d["predicted"]),
            d["predicted_label"],
            float(d["probability"]),
            float(d["true_probability"]),
            tuple(ClassMap.from_dict(m) for m in d["maps"]),
        )


@dataclass(frozen=True)
class ExplanationsIndex:
    """``explanations/index.json``: the photos, mistakes first, and what they were chosen from."""

    split: str
    images: int  # the evaluated images they were picked from
    classes_with_correct: int  # classes with at least one correct photo
    max_mistakes: int
    max_classes: int  # correct photos shown at most, one per class
    photos: tuple[ExplainedPhoto, ...]

    def of_kind(self, kind: str) -> list[ExplainedPhoto]:
        return [p for p in self.photos if p.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "images": self.images,
            "classes_with_correct": self.classes_with_correct,
            "max_mistakes": self.max_mistakes,
            "max_classes": self.max_classes,
            "photos": [p.to_dict() for p in self.photos],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExplanationsIndex:
        return cls(
            d["split"],
            int(d["images"]),
            int(d["classes_with_correct"]),
            int(d["max_mistakes"]),
            int(d["max_classes"]),
            tuple(ExplainedPhoto.from_dict(p) for p in d["photos"]),
        )

    def write(self, directory: Path) -> Path:
        """Write ``index.json`` into ``directory`` (the job's :data:`EXPLANATIONS_DIR`); its path."""
        path = directory / EXPLANATIONS_INDEX_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> ExplanationsIndex:
        """Read the ``index.json`` in ``directory``, as :meth:`write` wrote it."""
        return cls.from_dict(json.loads((directory / EXPLANATIONS_INDEX_FILE).read_text()))


# --- data_check.json -------------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    """One file found again in a later split (same content hash): ``first`` in ``first_split``, and so on."""

    first_split: str
    first: str
    second_split: str
    second: str

    @property
    def pair(self) -> str:
        """``train/test``: which splits share the file."""
        return f"{self.first_split}/{self.second_split}"


@dataclass(frozen=True)
class DataCheck:
    """What the job found in its splits before the first epoch.

    Files are named ``<split>/<path under the split's folder>``; the lists are complete (the log caps them).
    """

    classes: tuple[str, ...]
    counts: Mapping[str, tuple[int, ...]]  # split -> images per class, those the loaders read
    unreadable: Mapping[str, int]  # split -> files the scan dropped as undecodable (its one count of them)
    image_size: int  # the crop side: smaller images are upscaled
    small: tuple[str, ...]  # width or height under image_size
    grey: tuple[str, ...]  # greyscale (L, LA, 1, I, F, or a grey palette)
    cmyk: tuple[str, ...]
    duplicates: tuple[tuple[str, ...], ...]  # groups of identical files within one split
    leaks: tuple[Leak, ...]  # identical files in two splits: leakage
    class_weights: tuple[float, ...] | None  # the loss's, with class_weights=balanced
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "counts": {k: list(v) for k, v in self.counts.items()},
            "unreadable": dict(self.unreadable),
            "image_size": self.image_size,
            "small": list(self.small),
            "grey": list(self.grey),
            "cmyk": list(self.cmyk),
            "duplicates": [list(g) for g in self.duplicates],
            "leaks": [vars(leak) for leak in self.leaks],
            "class_weights": list(self.class_weights) if self.class_weights is not None else None,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataCheck:
        weights = d.get("class_weights")
        return cls(
            tuple(d["classes"]),
            {k: tuple(int(n) for n in v) for k, v in d["counts"].items()},
            {k: int(v) for k, v in d["unreadable"].items()},
            int(d["image_size"]),
            tuple(d["small"]),
            tuple(d["grey"]),
            tuple(d["cmyk"]),
            tuple(tuple(g) for g in d["duplicates"]),
            tuple(Leak(**leak) for leak in d["leaks"]),
            tuple(float(w) for w in weights) if weights is not None else None,
            float(d["seconds"]),
        )

    def write(self, directory: Path) -> Path:
        """Write :data:`DATA_CHECK_FILE` into ``directory`` (the job's output data folder); its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / DATA_CHECK_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> DataCheck:
        """Read the :data:`DATA_CHECK_FILE` in ``directory``, as :meth:`write` wrote it."""
        return cls.from_dict(json.loads((directory / DATA_CHECK_FILE).read_text()))
