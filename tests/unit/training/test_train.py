import csv
import json
import re

import torch

from tests.unit.training.conftest import CLASS_DIRS, fast_args
from dogbreed.artifacts import ModelMetadata
from dogbreed.metric_lines import METRIC_DEFINITIONS
from dogbreed.training.job import main
from tests.unit.training.corrupt_images import add_corrupt_images


def metric_values(text: str) -> dict[str, list[float]]:
    return {d["Name"]: [float(v) for v in re.findall(d["Regex"], text)] for d in METRIC_DEFINITIONS}


def test_end_to_end(opt_ml, fake_weights, capsys):
    add_corrupt_images(opt_ml / "input" / "data" / "train" / CLASS_DIRS[0])
    (opt_ml / "input" / "data" / "train" / CLASS_DIRS[0] / "README.txt").write_text("ignored")
    # hyperparameters.json as SageMaker writes it; flags win over it.
    (opt_ml / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({"epochs": '"2"', "lr": "0.01", "max_unreadable_fraction": '"0.2"', "sagemaker_job_name": "x"})
    )
    assert main(fast_args("--pretrained", str(fake_weights), "--patience", "5", "--int8", "true")) == 0
    out = capsys.readouterr().out

    model_dir = opt_ml / "model"
    assert {p.name for p in model_dir.iterdir()} >= {"model.pt", "model.onnx", "model.int8.onnx", "model.json"}
    assert ModelMetadata.load(model_dir).int8.calibration_images == 24
    metadata = ModelMetadata.load(model_dir)
    assert metadata.classes == ["Affenpinscher", "Afghan hound", "German shepherd dog"]
    assert metadata.class_dirs == CLASS_DIRS and metadata.arch == "resnet18"
    assert metadata.preprocessing.crop_size == 64 and metadata.hyperparameters["lr"] == 0.01
    assert set(metadata.metrics) >= {"valid_loss", "valid_accuracy", "test_loss", "test_accuracy", "best_epoch"}
    state = torch.load(model_dir / "model.pt", weights_only=True)
    assert state["fc.weight"].shape == (3, 512)

    data = opt_ml / "output" / "data"
    metrics = json.loads((data / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert len(metrics["unreadable"]["train"]) == 3  # empty + text at scan time, truncated at load time
    assert metrics["final"]["onnx_max_abs_diff"] <= 1e-4
    for split in ("valid", "test"):
        rows = list(csv.reader(open(data / split / "confusion_matrix.csv")))
        assert rows[0][1:] == metadata.classes and [r[0] for r in rows[1:]] == metadata.classes
        total = sum(int(v) for r in rows[1:] for v in r[1:])
        assert total == 12
        per_class = list(csv.DictReader(open(data / split / "per_class_accuracy.csv")))
        assert [r["class"] for r in per_class] == metadata.classes
    assert not (opt_ml / "output" / "failure").exists()
    # The data check: the scan's own count of undecodable files, and the Data section of the report.
    check = json.loads((data / "data_check.json").read_text())
    assert check["unreadable"]["train"] == 2 and check["counts"]["valid"] == [4, 4, 4]
    assert '<section id="data">' in (data / "report.html").read_text()

    # The metric regexes find each epoch line's numbers and tell the names apart.
    found = metric_values(out)
    assert found["epoch"] == [1, 2]
    for name in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy"):
        assert found[name] == [round(h[name], 4) for h in metrics["history"]], name
    assert len(found["images_per_sec"]) == 2 and len(found["epoch_seconds"]) == 2
    assert found["test_loss"] == [round(metrics["final"]["test_loss"], 4)]
    assert found["test_accuracy"] == [round(metrics["final"]["test_accuracy"], 4)]
    assert re.search(
        r"epoch=2 train_loss=\d\.\d{4} train_accuracy=\d\.\d{4} valid_loss=\d\.\d{4} valid_accuracy=\d\.\d{4} "
        r"images_per_sec=\d+\.\d epoch_seconds=\d+\.\d\n", out
    )
    assert out.count("skipping unreadable image") == 3


def test_metric_regexes_do_not_confuse_names():
    line = "epoch=3 train_loss=0.4123 train_accuracy=0.8512 valid_loss=0.3901 valid_accuracy=0.8721 images_per_sec=312.4 epoch_seconds=12.1"
    values = {k: v[0] for k, v in metric_values(line).items() if v}
    assert values == {
        "epoch": 3, "train_loss": 0.4123, "train_accuracy": 0.8512, "valid_loss": 0.3901,
        "valid_accuracy": 0.8721, "images_per_sec": 312.4, "epoch_seconds": 12.1,
    }
    assert metric_values("test_loss=1e-05 test_accuracy=1.0000")["test_loss"] == [1e-05]
    assert metric_values("best_epoch=4")["epoch"] == []


def test_resume_after_last_completed_epoch(opt_ml, capsys):
    assert main(fast_args("--epochs", "1")) == 0
    first = capsys.readouterr().out
    assert "epoch=1 " in first and "resuming" not in first
    assert main(fast_args("--epochs", "2")) == 0
    second = capsys.readouterr().out
    assert "resuming from" in second and "after epoch 1" in second
    assert metric_values(second)["epoch"] == [2]
    history = json.loads((opt_ml / "output" / "data" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_checkpoint_of_another_job_is_refused(opt_ml, capsys):
    assert main(fast_args("--epochs", "1")) == 0
    assert main(fast_args("--epochs", "2", "--freeze", "layer3")) == 1
    reason = (opt_ml / "output" / "failure").read_text()
    assert "different job" in reason and "freeze" in reason


def test_too_many_unreadable_images_fail_the_job(opt_ml, capsys):
    for folder in CLASS_DIRS:
        (opt_ml / "input" / "data" / "valid" / folder / "bad.jpg").write_text("nope")
    assert main(fast_args()) == 1
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason.count("\n") == 1 and "3 of 15 images" in reason and "valid split" in reason
    assert "training failed" in capsys.readouterr().out


def test_missing_channel_and_bad_hyperparameter(opt_ml, capsys):
    assert main(fast_args("--lr", "0")) == 2
    assert "lr" in (opt_ml / "output" / "failure").read_text()
    assert main(fast_args("--valid", str(opt_ml / "nowhere"))) == 1
    assert "valid channel is missing" in (opt_ml / "output" / "failure").read_text()


def test_no_weights_fails(opt_ml, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert main(fast_args()) == 1
    reason = (opt_ml / "output" / "failure").read_text()
    assert "no ImageNet weights for resnet18" in reason and "downloads are disabled" in reason


def test_unexpected_exception_writes_type_and_message(opt_ml, monkeypatch, capsys):
    import dogbreed.training.stages

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(dogbreed.training.stages, "build_model", boom)
    assert main(fast_args()) == 1
    assert (opt_ml / "output" / "failure").read_text() == "RuntimeError: CUDA out of memory\n"
    assert "Traceback" in capsys.readouterr().out
