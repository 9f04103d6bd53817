"""decode_hyperparameter: SageMaker's plain or JSON-encoded values, as the job and the launcher read them;
parse_assignments: ``--hp NAME=VALUE``, as the launcher and the local search read it."""

from __future__ import annotations

import pytest

from dogbreed.hyperparameters import AssignmentError, decode_hyperparameter, parse_assignments


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


@pytest.mark.parametrize("pairs, parsed", [
    ([], {}),
    (["epochs=3", "lr=0.001"], {"epochs": "3", "lr": "0.001"}),
    ([" arch = resnet50 "], {"arch": "resnet50"}),  # names and values stripped
    (["note=a=b"], {"note": "a=b"}),  # split at the first '='
    (["checkpoint="], {"checkpoint": ""}),  # an empty value is a value
    (["lr=0.1", "epochs=2", "lr=0.2"], {"lr": "0.2", "epochs": "2"}),  # the last one wins, in first-seen order
])
def test_parse_assignments(pairs, parsed):
    result = parse_assignments(pairs)
    assert result == parsed
    assert list(result) == list(parsed)


@pytest.mark.parametrize("pair", ["epochs", "=3", "  =3", ""])
def test_parse_assignments_refuses_a_pair_without_a_name_or_an_equals_sign(pair):
    with pytest.raises(AssignmentError) as caught:
        parse_assignments(["lr=0.1", pair], flag="--param")
    assert str(caught.value) == f"--param {pair!r} is not NAME=VALUE"
    assert isinstance(caught.value, ValueError)
