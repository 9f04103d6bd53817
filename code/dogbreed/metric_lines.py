"""The metric lines a training job logs, and the regexes SageMaker reads them with.

Each epoch logs one line of ``name=value`` pairs, e.g.::

    epoch=3 train_loss=0.4123 train_accuracy=0.8512 valid_loss=0.3901 valid_accuracy=0.8721 images_per_sec=312.4 epoch_seconds=12.1

and the end of the job ``test_loss=0.4011 test_accuracy=0.8650`` and, with the int8 export,
``fp32_valid_accuracy=0.9150 int8_valid_accuracy=0.9120`` (both ONNX models, ONNX Runtime,
on the validation split). ``METRIC_DEFINITIONS`` is the ``metric_definitions`` argument of
a SageMaker estimator for this image.

The job writes these lines (:mod:`dogbreed.training`) and the launcher, which has no torch,
sends their regexes to SageMaker (:mod:`dogbreed.launcher.training_jobs`), so the format
belongs to neither.
"""  # noqa: E501 - the example is one whole log line, as the job writes it

from __future__ import annotations

from collections.abc import Mapping

EPOCH_METRICS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_accuracy",
    "images_per_sec",
    "epoch_seconds",
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
