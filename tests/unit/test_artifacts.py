"""model.json: what training writes is what serving reads; broken files are clear errors."""

from __future__ import annotations

import json

import pytest

from dogbreed.artifacts import ModelLoadError, ModelMetadata
from dogbreed.preprocessing import Preprocessing


def test_round_trip(tmp_path):
    meta = ModelMetadata(
        arch="resnet50",
        classes=["Affenpinscher", "German shepherd dog"],
        class_dirs=["001.Affenpinscher", "063.German_shepherd_dog"],
        preprocessing=Preprocessing(resize_size=288, crop_size=256),
        metrics={"test_accuracy": 0.81},
        hyperparameters={"lr": 0.001},
    )
    meta.save(tmp_path)
    raw = json.loads((tmp_path / "model.json").read_text())
    assert raw["num_classes"] == 2 and raw["input"]["shape"] == [None, 3, 256, 256]
    assert ModelMetadata.load(tmp_path) == meta


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "missing"),
        ("{not json", "not readable JSON"),
        ('{"arch": "resnet50"}', "not a valid model description"),
        ('{"arch": "resnet50", "classes": [], "preprocessing": {}}', "no classes"),
        ('{"arch": "r", "classes": ["a"], "preprocessing": {"resize_size": 1}}', "not a valid"),
        ('{"format_version": 99, "arch": "r", "classes": ["a"]}', "format_version 99"),
    ],
)
def test_broken_model_json_is_a_clear_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "model.json").write_text(content)
    with pytest.raises(ModelLoadError, match=message):
        ModelMetadata.load(tmp_path)
