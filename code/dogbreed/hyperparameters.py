"""Hyperparameters as text: ``NAME=VALUE`` from a command line, and SageMaker's spelling of a value.

SageMaker passes every hyperparameter as a string, and newer SDKs JSON-encode the value
first, so ``lr=0.01`` may arrive as ``0.01`` or as ``"0.01"`` (quotes included), both in the
job's ``hyperparameters.json`` and in what DescribeTrainingJob and
DescribeHyperParameterTuningJob answer. Torch-free: the launcher reads it too.

``--hp NAME=VALUE`` is how both the launcher and ``python -m dogbreed.tune`` take fixed
hyperparameters; :func:`parse_assignments` reads it for both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable


class AssignmentError(ValueError):
    """A ``NAME=VALUE`` argument without its ``=`` or without a name; the message names the flag."""


def parse_assignments(pairs: Iterable[str], flag: str = "--hp") -> dict[str, str]:
    """``["epochs=3", "lr=0.001"]`` -> ``{"epochs": "3", "lr": "0.001"}``, in the order given.

    The value is everything after the first ``=``, so it may hold ``=`` or be empty; names
    and values lose surrounding whitespace, and values stay text (SageMaker sends strings).
    A name given twice keeps its last value, as a repeated command-line flag does.
    :class:`AssignmentError` (``"--hp 'epochs' is not NAME=VALUE"``) for a pair without ``=``
    or with an empty name; ``flag`` is the option the pairs came from.
    """
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise AssignmentError(f"{flag} {pair!r} is not NAME=VALUE")
        result[name.strip()] = value.strip()
    return result


def decode_hyperparameter(raw: str) -> str:
    """The text a hyperparameter's value stands for, without surrounding whitespace.

    A JSON string is unquoted (``"\\"resnet50\\""`` -> ``resnet50``, escapes decoded); anything
    else, a JSON number or ``true`` included, is the text as it came (``0.0010`` stays
    ``0.0010``), since the caller converts it to the type it needs.
    """
    text = raw.strip()
    try:
        decoded = json.loads(text)
    except ValueError:  # plain text, as older SDKs and the command line send it
        return text
    return decoded.strip() if isinstance(decoded, str) else text
