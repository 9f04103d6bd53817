"""decode_hyperparameter: SageMaker's plain or JSON-encoded values, as the job and the launcher read them."""

from __future__ import annotations

import pytest

from dogbreed.hyperparameters import decode_hyperparameter


@pytest.mark.parametrize("raw, text", [
    ('"0.01"', "0.01"),  # newer SDKs JSON-encode every value
    ("0.01", "0.01"),  # older ones, and the command line, do not
    ("0.0010", "0.0010"),  # a JSON number keeps its spelling: the caller types it
    ("true", "true"),
    ('"resnet50"', "resnet50"),
    ("resnet50", "resnet50"),
    (' " all " ', "all"),
    ('"\\u00e9"', "\u00e9"),  # JSON escapes decoded
    ('"\\"x\\""', '"x"'),  # decoded once
    ('""', ""),
    ("null", "null"),  # not a string: the text as it came
    ("[1, 2]", "[1, 2]"),
    ('"all', '"all'),  # not JSON: the text as it came
])
def test_decode(raw, text):
    assert decode_hyperparameter(raw) == text
