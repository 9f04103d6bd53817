"""Which ONNX model the endpoint serves: the int8 gate, DOGBREED_PRECISION and DOGBREED_INT8_MAX_LOSS."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dogbreed.artifacts import INT8_ONNX_FILE, Int8Export, ModelLoadError, ModelMetadata
from dogbreed.preprocessing import Preprocessing
from dogbreed.serving.environment import ConfigurationError, ServingEnvironment
from dogbreed.serving.handler_service import HandlerService
from dogbreed.serving.inference_handler import InferenceHandler
from dogbreed.serving.predictor import Predictor, choose_precision

from .fake_mms import Context
from .conftest import BREEDS


def record(fp32: float, int8: float) -> Int8Export:
    return Int8Export(file=INT8_ONNX_FILE, format="QDQ u8s8 per-channel", calibration="MinMax",
                      calibration_images=128, reduce_range=True, valid_images=835, fp32_valid_top1=fp32,
                      int8_valid_top1=int8)


def metadata(int8: Int8Export | None) -> ModelMetadata:
    return ModelMetadata(arch="resnet50", classes=list(BREEDS), int8=int8)


def test_auto_serves_int8_when_it_loses_at_most_the_limit():
    precision, reason = choose_precision(metadata(record(0.915, 0.912)), "auto", 0.5)
    assert precision == "int8"
    assert reason == ("valid top-1 91.2% vs fp32 91.5% (-0.3 points) on 835 images, limit 0.5 points "
                      "(DOGBREED_INT8_MAX_LOSS)")
    # Exactly the limit passes (0.915 - 0.910 is not exactly 0.005 in floating point), and so does a gain.
    assert choose_precision(metadata(record(0.915, 0.910)), "auto", 0.5)[0] == "int8"
    assert choose_precision(metadata(record(0.900, 0.910)), "auto", 0.0)[0] == "int8"


def test_auto_serves_fp32_when_int8_loses_more():
    precision, reason = choose_precision(metadata(record(0.915, 0.903)), "auto", 0.5)
    assert precision == "fp32"
    assert reason.startswith("int8 loses too much: valid top-1 90.3% vs fp32 91.5% (-1.2 points)")
    assert "limit 0.5 points" in reason
    assert choose_precision(metadata(record(0.915, 0.903)), "auto", 2.0)[0] == "int8"  # a looser limit
    assert choose_precision(metadata(record(0.915, 0.914)), "auto", 0.0)[0] == "fp32"  # no loss at all allowed


def test_requested_precision_overrides_the_gate():
    assert choose_precision(metadata(record(0.915, 0.915)), "fp32", 0.5) == ("fp32", "DOGBREED_PRECISION=fp32")
    precision, reason = choose_precision(metadata(record(0.915, 0.80)), "int8", 0.5)
    assert precision == "int8" and reason.startswith("DOGBREED_PRECISION=int8; valid top-1 80.0% vs fp32 91.5%")


def test_a_model_without_an_int8_export():
    precision, reason = choose_precision(metadata(None), "auto", 0.5)
    assert precision == "fp32" and "no int8 export" in reason
    assert choose_precision(metadata(None), "fp32", 0.5)[0] == "fp32"
    with pytest.raises(ModelLoadError, match="DOGBREED_PRECISION=int8, but this model has no int8 export"):
        choose_precision(metadata(None), "int8", 0.5)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("fp32", "fp32"), ("int8", "int8"), (" ", "auto")])
def test_precision_variable(value, expected):
    assert ServingEnvironment.from_env({"DOGBREED_PRECISION": value}, cpus=2).precision == expected
    assert ServingEnvironment.from_env({}, cpus=2).precision == "auto"


@pytest.mark.parametrize("value, expected", [("0", 0.0), ("1.5", 1.5), ("", 0.5)])
def test_int8_max_loss_variable(value, expected):
    assert ServingEnvironment.from_env({"DOGBREED_INT8_MAX_LOSS": value}, cpus=2).int8_max_loss == expected


@pytest.mark.parametrize(
    "name, value",
    [
        ("DOGBREED_PRECISION", "int4"),
        ("DOGBREED_PRECISION", "INT8 please"),
        ("DOGBREED_PRECISION", "float16"),
        ("DOGBREED_INT8_MAX_LOSS", "-0.1"),
        ("DOGBREED_INT8_MAX_LOSS", "half a point"),
        ("DOGBREED_INT8_MAX_LOSS", "nan"),
        ("DOGBREED_INT8_MAX_LOSS", "inf"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigurationError, match=name):
        ServingEnvironment.from_env({name: value}, cpus=2)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> Path:
    """A small model exported by the training code in fp32 and int8 (a random ResNet18 at 64 pixels,
    calibrated and measured on generated images)."""
    import torch
    import torchvision

    from dogbreed.training.data import scan_split
    from dogbreed.training.export import export_model_dir
    from dogbreed.training.loop import GracefulStop
    from dogbreed.training.quantize import export_int8
    from tests.unit.training.conftest import make_split

    root = tmp_path_factory.mktemp("int8-model")
    torch.manual_seed(0)
    model = torchvision.models.get_model("resnet18", weights=None, num_classes=len(BREEDS)).eval()
    meta = ModelMetadata(arch="resnet18", classes=list(BREEDS), preprocessing=Preprocessing(72, 64))
    meta = export_model_dir(model, meta, root / "model").metadata
    train = scan_split("train", make_split(root / "train", per_class=4, seed=1))
    valid = scan_split("valid", make_split(root / "valid", per_class=2, seed=2), train.class_dirs)
    int8 = export_int8(root / "model", meta.preprocessing, train, valid, 8, True, 0, GracefulStop())
    dataclasses.replace(meta, int8=int8).save(root / "model")
    return root / "model"


def copy_with_figures(source: Path, target: Path, fp32: float, int8: float) -> Path:
    """A copy of the model whose model.json records these top-1 figures."""
    shutil.copytree(source, target)
    raw = json.loads((target / "model.json").read_text())
    raw["int8"].update(fp32_valid_top1=fp32, int8_valid_top1=int8)
    (target / "model.json").write_text(json.dumps(raw))
    return target


def logits_of(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": batch})[0]


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)


def test_predictor_loads_the_file_the_gate_chooses(int8_model, tmp_path, batch, caplog):
    fp32_logits, int8_logits = logits_of(int8_model / "model.onnx", batch), logits_of(int8_model / INT8_ONNX_FILE, batch)
    assert not np.allclose(fp32_logits, int8_logits, atol=1e-6)  # the two files are told apart below

    within = copy_with_figures(int8_model, tmp_path / "within", fp32=0.915, int8=0.912)
    with caplog.at_level(logging.INFO, logger="dogbreed.serving.predictor"):
        predictor = Predictor(within)
    assert predictor.precision == "int8" and "limit 0.5 points" in predictor.precision_reason
    np.testing.assert_allclose(predictor.run(batch), int8_logits, atol=1e-5)
    assert "serving int8 (model.int8.onnx): valid top-1 91.2% vs fp32 91.5% (-0.3 points)" in caplog.text

    over = copy_with_figures(int8_model, tmp_path / "over", fp32=0.915, int8=0.90)
    predictor = Predictor(over)
    assert predictor.precision == "fp32" and predictor.precision_reason.startswith("int8 loses too much")
    np.testing.assert_allclose(predictor.run(batch), fp32_logits, atol=1e-5)
    assert Predictor(over, int8_max_loss=2.0).precision == "int8"
    forced = Predictor(over, precision="int8")
    assert forced.precision == "int8"
    np.testing.assert_allclose(forced.run(batch), int8_logits, atol=1e-5)
    assert Predictor(within, precision="fp32").precision == "fp32"


def test_a_recorded_int8_file_that_is_missing_is_a_load_error(int8_model, tmp_path):
    model = copy_with_figures(int8_model, tmp_path / "model", fp32=0.9, int8=0.9)
    (model / INT8_ONNX_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"model.int8.onnx is missing.*DOGBREED_PRECISION=fp32"):
        Predictor(model)
    assert Predictor(model, precision="fp32").precision == "fp32"


def test_an_older_model_json_serves_fp32(int8_model, tmp_path):
    """A model.json written before int8 exports has no int8 key at all."""
    model = tmp_path / "old"
    shutil.copytree(int8_model, model)
    raw = json.loads((model / "model.json").read_text())
    del raw["int8"], raw["files"]["onnx_int8"]
    (model / "model.json").write_text(json.dumps(raw))
    (model / INT8_ONNX_FILE).unlink()
    predictor = Predictor(model)
    assert predictor.precision == "fp32" and "no int8 export" in predictor.precision_reason
    with pytest.raises(ModelLoadError, match="no int8 export"):
        Predictor(model, precision="int8")


def test_the_handler_passes_the_environment_on(int8_model, monkeypatch):
    settings = ServingEnvironment.from_env({"DOGBREED_PRECISION": "fp32"}, cpus=1)
    assert InferenceHandler(settings).default_model_fn(str(int8_model)).precision == "fp32"
    monkeypatch.setenv("DOGBREED_PRECISION", "int8")
    service = HandlerService()
    service.initialize(Context(int8_model))
    assert service.transformer.model.precision == "int8"


def test_the_int8_model_explains_too(int8_model):
    from .images import half_and_half

    predictor = Predictor(int8_model, precision="int8")
    assert predictor.precision == "int8" and predictor.can_explain
    image = half_and_half((96, 80))
    answer = predictor.classify(image, explain="cam")
    grid = np.asarray(answer["explanation"]["grid"])
    assert grid.shape == predictor.metadata.explain.grid
    logits = predictor.run(predictor.preprocessing(image)[None])[0]
    # The int8 model's head is float on its own feature map: the map still sums to its logit.
    assert answer["explanation"]["logit"] == pytest.approx(grid.mean() + answer["explanation"]["bias"], abs=1e-3)
    assert answer["explanation"]["logit"] == pytest.approx(float(logits[answer["predicted_class"]]), abs=1e-3)
    assert answer["explanation"]["grid_region"] == pytest.approx(predictor.preprocessing.crop_region(96, 80), abs=0.051)
