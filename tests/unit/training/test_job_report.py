"""Every training job writes its report; rules fire on a run built to fail and not on a healthy one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

import dogbreed.report.page
from dogbreed.report.data import SplitResults
from dogbreed.training.job import main
from tests.unit.training.conftest import fast_args

FIGURES = {"steps", "epochs", "confusion_valid", "confusion_test", "system", "step_split"}


def verdicts(output_dir) -> dict[str, dict]:
    return {v["name"]: v for v in json.loads((output_dir / "report.json").read_text())["rules"]}


def test_a_healthy_job_writes_a_report_with_curves_rules_profile_and_results(opt_ml, fake_weights, capsys):
    assert main(fast_args("--pretrained", str(fake_weights), "--epochs", "3", "--batch_size", "2",
                          "--patience", "0")) == 0
    out = opt_ml / "output" / "data"
    assert f"report written to {out / 'report.html'}" in capsys.readouterr().out
    assert {p.stem for p in (out / "report_figures").glob("*.png")} >= FIGURES
    html = (out / "report.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert f'data-metric="test_accuracy">{metrics["final"]["test_accuracy"]:.4f}<' in html
    assert "Affenpinscher" in html and "Top operators" in html
    report = json.loads((out / "report.json").read_text())
    assert report["warnings"] == []
    rules = verdicts(out)
    assert set(rules) >= {"VanishingGradient", "ExplodingTensor", "LossNotDecreasing", "Overfit", "Overtraining",
                          "PoorWeightInitialization"}
    for name in ("ExplodingTensor", "LossNotDecreasing"):
        assert rules[name]["evaluated"] and not rules[name]["triggered"], rules[name]
    names = [b["name"] for b in report["bottlenecks"]]
    assert {"CPUBottleneck", "Dataloader", "StepOutlier", "LowGPUUtilization"} <= set(names)
    gpu = next(b for b in report["bottlenecks"] if b["name"] == "LowGPUUtilization")
    assert not gpu["evaluated"] and "no GPU" in gpu["finding"]

    # Class activation maps: the most confident test mistakes (two overlays each: the predicted and the true
    # class's map) and each class's most confident correct photo, inlined into the page.
    matrix = SplitResults.from_csv(out / "test").matrix
    wrong = sum(n for i, row in enumerate(matrix) for j, n in enumerate(row) if i != j)
    with_correct = sum(1 for i in range(len(matrix)) if matrix[i][i])
    photos = json.loads((out / "explanations" / "index.json").read_text())["photos"]
    assert [p["kind"] for p in photos] == ["mistake"] * min(wrong, 8) + ["correct"] * with_correct
    mistakes = [p for p in photos if p["kind"] == "mistake"]
    assert [p["probability"] for p in mistakes] == sorted((p["probability"] for p in mistakes), reverse=True)
    for photo in photos:
        maps = [(m["label"], m["file"]) for m in photo["maps"]]
        expected = [photo["predicted_label"]] + ([photo["true_label"]] if photo["kind"] == "mistake" else [])
        assert [label for label, _ in maps] == expected and photo["true_label"] in photo["image"].replace("_", " ")
        for _, name in maps:
            with Image.open(out / "explanations" / name) as overlay:
                assert overlay.format == "JPEG" and overlay.size == (64, 48)  # the photo's own size (under 384)
    assert html.count('data-explained="pairs"') == len(mistakes) and html.count('data-explained="singles"') == len(
        photos) - len(mistakes)
    assert html.count('src="data:image/jpeg;base64,') == sum(len(p["maps"]) for p in photos)

    # TensorBoard (SageMaker's TensorBoardOutputConfig folder): the scalars and the profiler trace.
    tensorboard = opt_ml / "output" / "tensorboard"
    events = b"".join(p.read_bytes() for p in (tensorboard / "scalars").rglob("*tfevents*"))
    assert b"CrossEntropyLoss_output_0" in events and b"epoch/valid_loss" in events
    assert list((tensorboard / "profiler").glob("*.pt.trace.json"))

    # python -m dogbreed.report rebuilds the same verdicts from the files alone.
    (out / "report.html").unlink()
    before = (out / "report.json").read_text()
    subprocess.run([sys.executable, "-m", "dogbreed.report", str(opt_ml)], check=True, capture_output=True)
    assert (out / "report.html").is_file()
    assert json.loads((out / "report.json").read_text())["rules"] == json.loads(before)["rules"]
    assert (out / "report.html").read_text().count('src="data:image/jpeg;base64,') == sum(
        len(p["maps"]) for p in photos)


def test_a_job_built_to_fail_trips_the_loss_rules_and_says_so(opt_ml, fake_weights, capsys):
    """lr=1000 with SGD on the whole network: the loss becomes NaN. The job fails, with its report."""
    assert main(fast_args("--pretrained", str(fake_weights), "--epochs", "3", "--batch_size", "2",
                          "--patience", "0", "--lr", "1000", "--optimizer", "sgd", "--freeze", "none")) == 1
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason.startswith("training diverged: the validation loss was never finite in 3 epochs"), reason
    assert not (opt_ml / "model" / "model.pt").exists()
    out = opt_ml / "output" / "data"
    assert (out / "report.html").is_file()
    rules = verdicts(out)
    for name in ("ExplodingTensor", "LossNotDecreasing"):
        assert rules[name]["triggered"] and rules[name]["step"] is not None, rules[name]


def test_debug_profile_and_test_off_record_nothing_and_say_so(opt_ml, capsys):
    """No trial, no profile, and no test channel: no class activation maps (an earlier run's are removed)."""
    shutil.rmtree(opt_ml / "input" / "data" / "test")
    stale = opt_ml / "output" / "data" / "explanations"
    stale.mkdir(parents=True)
    (stale / "index.json").write_text("{}")
    assert main(fast_args("--epochs", "1", "--debug", "off", "--profile", "off")) == 0
    out = opt_ml / "output" / "data"
    assert not (out / "debug-output").exists() and not (out / "profile").exists()
    assert not stale.exists()
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("debug=off" in w for w in warnings) and any("profile=off" in w for w in warnings)
    assert any("class activation maps: none" in w for w in warnings)
    assert 'id="explanations"' not in (out / "report.html").read_text()
    assert "confusion_valid.png" in {p.name for p in (out / "report_figures").iterdir()}


def test_a_report_that_cannot_be_built_leaves_the_job_successful(opt_ml, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dogbreed.report.page, "render", broken)
    assert main(fast_args("--epochs", "1")) == 0
    log = capsys.readouterr().out
    assert re.search(r"WARNING .*the training report could not be built \(OSError: disk full\)", log)
    assert (opt_ml / "model" / "model.onnx").is_file() and (opt_ml / "model" / "model.pt").is_file()
    assert not (opt_ml / "output" / "failure").exists()


@pytest.mark.parametrize("layout", ["opt_ml", "output_tar"])
def test_report_command_finds_the_output_in_either_layout(opt_ml, tmp_path, layout, capsys):
    assert main(fast_args("--epochs", "1")) == 0
    out = opt_ml / "output" / "data"
    (out / "report.html").unlink()
    target = opt_ml if layout == "opt_ml" else out  # output.tar.gz unpacks to the output data folder
    from dogbreed.report.__main__ import main as report_main

    assert report_main([str(target)]) == 0
    assert (out / "report.html").is_file()
