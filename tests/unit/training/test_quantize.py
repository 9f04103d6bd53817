"""The int8 export: model.int8.onnx beside model.onnx, both measured on the validation split."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

import dogbreed.training.quantize
from dogbreed.artifacts import INT8_ONNX_FILE, ModelMetadata
from dogbreed.images import open_image
from dogbreed.preprocessing import Preprocessing
from dogbreed.training.config import TrainConfig
from dogbreed.training.data import scan_split
from dogbreed.training.environment import TrainingEnvironment
from dogbreed.training.failure import ConfigError
from dogbreed.training.job import main
from dogbreed.training.loop import GracefulStop, StopRequested
from dogbreed.metric_lines import METRIC_DEFINITIONS
from dogbreed.training.quantize import eval_batches, export_int8
from dogbreed.tools.opt_ml import build_tree
from tests.unit.training.conftest import CLASS_DIRS, fast_args, make_split
from tests.unit.training.corrupt_images import add_corrupt_images


def metric_values(text: str) -> dict[str, list[float]]:
    return {d["Name"]: [float(v) for v in re.findall(d["Regex"], text)] for d in METRIC_DEFINITIONS}


def fp32_and_int8_top1(model_dir, split, preprocessing) -> tuple[float, float]:
    """Both files' top-1 on the readable images of ``split``, recomputed here from the files."""
    batch = np.stack([preprocessing(open_image(p)) for p, _ in split.samples if str(p) not in split.unreadable])
    labels = np.array([c for p, c in split.samples if str(p) not in split.unreadable])
    top1 = []
    for name in ("model.onnx", INT8_ONNX_FILE):
        session = ort.InferenceSession(str(model_dir / name), providers=["CPUExecutionProvider"])
        top1.append(float((session.run(["logits"], {"input": batch})[0].argmax(1) == labels).mean()))
    return top1[0], top1[1]


def test_job_exports_int8_and_records_both_top1s(opt_ml, fake_weights, capsys):
    """Features on (freeze=all): the valid images are read again for ONNX Runtime; the truncated one is
    skipped and counted once, as the loaders count it."""
    add_corrupt_images(opt_ml / "input" / "data" / "valid" / CLASS_DIRS[1])
    assert main(fast_args("--pretrained", str(fake_weights), "--epochs", "2", "--lr", "0.01", "--debug", "off",
                          "--profile", "off", "--max_unreadable_fraction", "0.25", "--int8", "true")) == 0
    out = capsys.readouterr().out
    model_dir = opt_ml / "model"
    metadata = ModelMetadata.load(model_dir)
    int8 = metadata.int8
    assert int8 is not None and int8.file == INT8_ONNX_FILE
    assert (int8.format, int8.calibration, int8.reduce_range) == ("QDQ u8s8 per-channel", "MinMax", True)
    # 24 readable training images, under the default of 128: all of them; 12 readable valid images.
    assert int8.calibration_images == 24 and int8.valid_images == 12
    assert "int8_calibration_images=128, but the train split has 24 readable images" in out

    # The figures are the files' own, and the fp32 one is the job's PyTorch valid accuracy.
    valid = scan_split("valid", opt_ml / "input" / "data" / "valid")
    valid.unreadable[str(opt_ml / "input" / "data" / "valid" / CLASS_DIRS[1] / "truncated.jpg")] = "truncated"
    fp32, int8_top1 = fp32_and_int8_top1(model_dir, valid, metadata.preprocessing)
    assert (int8.fp32_valid_top1, int8.int8_valid_top1) == (pytest.approx(fp32), pytest.approx(int8_top1))
    assert int8.fp32_valid_top1 == pytest.approx(metadata.metrics["valid_accuracy"], abs=1e-6)

    # A QDQ graph with signed int8 weights.
    graph = onnx.load(str(model_dir / INT8_ONNX_FILE)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 10
    assert any(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in graph.initializer)

    metrics = json.loads((opt_ml / "output" / "data" / "metrics.json").read_text())
    assert metrics["final"]["fp32_valid_accuracy"] == int8.fp32_valid_top1
    assert metrics["final"]["int8_valid_accuracy"] == int8.int8_valid_top1
    assert len(metrics["unreadable"]["valid"]) == 3
    assert out.count("skipping unreadable image") == 3  # each once, though the int8 export reads it again
    found = metric_values(out)
    assert found["fp32_valid_accuracy"] == [round(int8.fp32_valid_top1, 4)]
    assert found["int8_valid_accuracy"] == [round(int8.int8_valid_top1, 4)]
    assert re.search(r"int8: valid top-1 \d\.\d{3} vs fp32 \d\.\d{3} \([-+]\d+\.\d points\) on 12 images; "
                     r"calibrated \(MinMax\) on 24 train images, reduce_range=True", out)
    assert "Created a copy of bias input" not in out  # the quantizer's per-layer chatter stays out of the log


def test_int8_false_exports_fp32_only(opt_ml, capsys):
    stale = opt_ml / "model" / INT8_ONNX_FILE
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's")
    assert main(fast_args("--epochs", "1", "--debug", "off", "--profile", "off", "--int8", "false")) == 0
    out = capsys.readouterr().out
    assert not stale.exists()
    assert json.loads((opt_ml / "model" / "model.json").read_text())["int8"] is None
    assert ModelMetadata.load(opt_ml / "model").int8 is None
    final = json.loads((opt_ml / "output" / "data" / "metrics.json").read_text())["final"]
    assert not {"fp32_valid_accuracy", "int8_valid_accuracy"} & set(final)
    assert not metric_values(out)["int8_valid_accuracy"]


def test_a_failed_quantization_fails_the_job_with_one_line(opt_ml, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this op\non this line either")

    monkeypatch.setattr(dogbreed.training.quantize, "quantize_static", broken)
    assert main(fast_args("--epochs", "1", "--debug", "off", "--profile", "off", "--int8", "true")) == 1
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason == ("the int8 export failed: RuntimeError: no kernel for this op on this line either; "
                      "set int8=false to export the fp32 model only\n")


def test_int8_hyperparameters():
    config = TrainConfig.from_mapping({"int8": '"false"', "int8_calibration_images": "16", "int8_reduce_range": "0"})
    assert (config.int8, config.int8_calibration_images, config.int8_reduce_range) == (False, 16, False)
    defaults = TrainConfig()
    assert (defaults.int8, defaults.int8_calibration_images, defaults.int8_reduce_range) == (True, 128, True)
    # auto: the architecture's calibration
    assert (defaults.int8_calibration, defaults.int8_calibration_method) == ("auto", "minmax")
    assert TrainConfig(arch="efficientnet_lite0").int8_calibration_method == "percentile"
    assert TrainConfig(arch="efficientnet_lite0", int8_calibration="minmax").int8_calibration_method == "minmax"
    with pytest.raises(ConfigError, match="int8_calibration_images=0"):
        TrainConfig(int8_calibration_images=0)
    with pytest.raises(ConfigError, match="int8"):
        TrainConfig.from_mapping({"int8": "maybe"})


@pytest.fixture
def small_model_dir(tmp_path, fake_weights):
    """A resnet18 at 64 pixels, exported in fp32, and generated train/valid splits."""
    from dogbreed.training.export import export_model_dir
    from dogbreed.training.model import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 3, str(fake_weights), "none").eval()
    metadata = ModelMetadata(arch="resnet18", classes=["a", "b", "c"], preprocessing=Preprocessing(72, 64))
    export_model_dir(model, metadata, tmp_path / "model")
    train = scan_split("train", make_split(tmp_path / "train", per_class=8, seed=1))
    valid = scan_split("valid", make_split(tmp_path / "valid", per_class=4, seed=2), train.class_dirs)
    return tmp_path / "model", metadata.preprocessing, train, valid


def test_calibration_draws_a_random_sample_and_counts_unreadable_images(small_model_dir):
    _, preprocessing, train, _ = small_model_dir
    add_corrupt_images(train.root / CLASS_DIRS[0])
    train = scan_split("train", train.root)  # the truncated file passes the header check
    order = np.random.default_rng(0).permutation(len(train.samples)).tolist()
    batches = list(eval_batches(train, preprocessing, order, GracefulStop(), limit=9, batch_size=4))
    labels = np.concatenate([b.labels for b in batches])
    assert [len(b.labels) for b in batches] == [4, 4, 1]
    assert batches[0].inputs.dtype == np.float32 and batches[0].inputs.shape[1:] == (3, 64, 64)
    assert len(set(labels.tolist())) == 3  # a random draw sees every class, not the first folder's images
    everything = list(eval_batches(train, preprocessing, order, GracefulStop()))
    assert sum(len(b.labels) for b in everything) == 24
    assert any(p.endswith("truncated.jpg") for p in train.unreadable)


def test_export_int8_stops_on_sigterm(small_model_dir):
    model_dir, preprocessing, train, valid = small_model_dir
    stop = GracefulStop()
    stop.requested = True
    with pytest.raises(StopRequested):
        export_int8(model_dir, preprocessing, train, valid, 8, True, 0, stop)


def test_reduce_range_off_is_recorded(small_model_dir):
    model_dir, preprocessing, train, valid = small_model_dir
    export = export_int8(model_dir, preprocessing, train, valid, 8, False, 0, GracefulStop())
    assert export.reduce_range is False and export.calibration_images == 8 and export.valid_images == 12
    assert (model_dir / INT8_ONNX_FILE).is_file()


@pytest.fixture(scope="module")
def real_photo_job(dogs3, tmp_path_factory):
    """A real small job on the real photos: ResNet18 (random weights whose BatchNorm statistics come
    from the training photos, so its features tell the breeds apart a little), freeze=all, 112 pixels,
    one view of each training image and no test split, for speed."""
    size = 112
    preprocessing = Preprocessing(128, size)
    photos = sorted((dogs3 / "train").glob("*/*.jpg"))
    pick = np.random.default_rng(0).permutation(len(photos))[:64]
    batch = torch.from_numpy(np.stack([preprocessing(open_image(photos[i])) for i in pick]))
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches
            module.reset_running_stats()
    with torch.no_grad():
        net.train()(batch)
    weights = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(net.state_dict(), weights)
    hyperparameters = {"arch": "resnet18", "epochs": "5", "lr": "0.01", "image_size": str(size),
                       "resize_size": "128", "augment": "false", "int8_calibration_images": "64",
                       "debug": "false", "profile": "false", "seed": "1"}
    opt_ml = build_tree(dogs3, tmp_path_factory.mktemp("opt_ml"), hyperparameters, weights)
    shutil.rmtree(opt_ml / "input" / "data" / "test")
    assert main([], env=TrainingEnvironment.from_env({"DOGBREED_OPT_ML": str(opt_ml)})) == 0
    return opt_ml


def test_int8_model_of_a_real_job_agrees_with_fp32_in_the_predictor(real_photo_job, dogs3):
    from dogbreed.serving.predictor import Predictor

    model_dir = real_photo_job / "model"
    fp32, int8 = Predictor(model_dir, precision="fp32"), Predictor(model_dir, precision="int8")
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    photos = sorted((dogs3 / "valid").glob("*/*.jpg"))
    class_dirs = sorted(d.name for d in (dogs3 / "valid").iterdir())
    labels = np.array([class_dirs.index(p.parent.name) for p in photos])
    inputs = np.stack([fp32.preprocess(p.read_bytes()) for p in photos])
    fp32_top1, int8_top1 = fp32.run(inputs).argmax(1), int8.run(inputs).argmax(1)
    assert len(set(fp32_top1.tolist())) >= 2  # a model that tells photos apart, or agreement proves nothing
    assert (fp32_top1 == int8_top1).mean() >= 0.9
    # The served models' accuracy is the one recorded (same ONNX Runtime, the serving image's decoding).
    record = ModelMetadata.load(model_dir).int8
    assert record.valid_images == len(photos)
    assert abs((fp32_top1 == labels).mean() - record.fp32_valid_top1) <= 1 / len(photos)
    assert abs((int8_top1 == labels).mean() - record.int8_valid_top1) <= 1 / len(photos)



def test_percentile_calibration_is_recorded_and_collected_a_batch_at_a_time(small_model_dir, monkeypatch):
    """The histogram calibration sees every calibration batch, one ONNX Runtime collection at a time (so it
    never holds every image's activations), and model.json names the method."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater

    model_dir, preprocessing, train, valid = small_model_dir
    collections = []
    original = HistogramCalibrater.collect_data

    def counting(self, reader):
        collections.append(reader)
        original(self, reader)

    monkeypatch.setattr(HistogramCalibrater, "collect_data", counting)
    export = export_int8(model_dir, preprocessing, train, valid, 24, True, 0, GracefulStop(), "percentile")
    assert export.calibration == "Percentile" and export.calibration_images == 24
    assert len(collections) == 2  # 24 images in batches of 16: two collections of one batch each
