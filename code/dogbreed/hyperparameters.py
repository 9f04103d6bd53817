"""How SageMaker spells a hyperparameter's value, decoded once for the job and the launcher.

SageMaker passes every hyperparameter as a string, and newer SDKs JSON-encode the value
first, so ``lr=0.01`` may arrive as ``0.01`` or as ``"0.01"`` (quotes included), both in the
job's ``hyperparameters.json`` and in what DescribeTrainingJob and
DescribeHyperParameterTuningJob answer. Torch-free: the launcher reads it too.
"""

from __future__ import annotations

import json


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
