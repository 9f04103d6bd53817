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


def int8_record(**changes):
    from dogbreed.artifacts import Int8Export

    fields = dict(file="model.int8.onnx", format="QDQ u8s8 per-channel", calibration="MinMax",
                  calibration_images=128, reduce_range=True, valid_images=835, fp32_valid_top1=0.915,
                  int8_valid_top1=0.912)
    return Int8Export(**{**fields, **changes})


def test_round_trip_with_an_int8_export(tmp_path):
    meta = ModelMetadata(arch="resnet50", classes=["Beagle", "Toy poodle"], int8=int8_record())
    meta.save(tmp_path)
    raw = json.loads((tmp_path / "model.json").read_text())
    assert raw["files"]["onnx_int8"] == "model.int8.onnx" and raw["format_version"] == 1
    assert raw["int8"]["fp32_valid_top1"] == 0.915 and raw["int8"]["reduce_range"] is True
    loaded = ModelMetadata.load(tmp_path)
    assert loaded == meta
    assert loaded.int8.loss_points == pytest.approx(0.3)
    assert loaded.int8.summary() == "valid top-1 91.2% vs fp32 91.5% (-0.3 points) on 835 images"


def test_model_json_without_int8_loads(tmp_path):
    """Files written before the int8 export (no key) and with int8=false (null) alike."""
    meta = ModelMetadata(arch="resnet50", classes=["Beagle"])
    meta.save(tmp_path)
    raw = json.loads((tmp_path / "model.json").read_text())
    assert raw["int8"] is None and "onnx_int8" not in raw["files"]
    del raw["int8"]
    (tmp_path / "model.json").write_text(json.dumps(raw))
    assert ModelMetadata.load(tmp_path).int8 is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fp32_valid_top1": None}, "not a valid model description"),
        ({"valid_images": "many"}, "not a valid model description"),
        ({"file": "../../elsewhere.onnx"}, "not a file name"),
        ({"file": ""}, "not a file name"),
    ],
)
def test_a_broken_int8_record_is_a_clear_error(tmp_path, change, message):
    ModelMetadata(arch="resnet50", classes=["Beagle"], int8=int8_record()).save(tmp_path)
    raw = json.loads((tmp_path / "model.json").read_text())
    raw["int8"].update(change)
    (tmp_path / "model.json").write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=message):
        ModelMetadata.load(tmp_path)
