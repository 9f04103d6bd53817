"""``python -m dogbreed.tune``: a search on cached features whose best trial is the training job's result."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from dogbreed.tune.search import main
from tests.browser import external_resources, visit
from tests.unit.training.conftest import SIZE

pytestmark = pytest.mark.usefixtures("opt_ml")


def tune(capsys, *args: str) -> tuple[int, str]:
    status = main(["--arch", "resnet18", "--epochs", "3", "--patience", "0", *SIZE, *args])
    return status, capsys.readouterr().out


def test_a_search_finds_the_best_trial_and_trains_that_model(opt_ml, capsys, tmp_path):
    status, log = tune(capsys, "--trials", "6", "--batch-sizes", "4,8")
    assert status == 0, log[-4000:]
    out = opt_ml / "output" / "data"
    tune_dir = out / "tune"
    # The backbone ran once per image; the trials only trained heads.
    assert log.count("features: train: computing") == 1
    trials = json.loads((tune_dir / "trials.json").read_text())
    assert len(trials["trials"]) == 6 and trials["searched"] == ["lr", "batch_size"]
    complete = [t for t in trials["trials"] if t["state"] == "COMPLETE"]
    assert complete and all(1e-4 <= t["params"]["lr"] <= 1e-1 and t["params"]["batch_size"] in (4, 8)
                            for t in trials["trials"])
    best = max(complete, key=lambda t: t["value"])
    assert trials["best"]["number"] == best["number"]
    # Each trial printed the job's metric lines (what SageMaker's tuner reads).
    assert len(re.findall(r"epoch=\d+ train_loss=[\d.]+ .*valid_accuracy=[\d.]+", log)) >= 6
    best_hp = json.loads((tune_dir / "best_hyperparameters.json").read_text())
    assert best_hp["lr"] == best["params"]["lr"] and best_hp["batch_size"] == best["params"]["batch_size"]
    with open(tune_dir / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows][0] == best["number"] and len(rows) == 6

    # The final model is the training job with the best hyperparameters: the same figures.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hyperparameters"]["lr"] == best["params"]["lr"]
    assert metrics["final"]["valid_accuracy"] == pytest.approx(best["value"], abs=1e-9)
    assert metrics["final"]["best_epoch"] == best["best_epoch"]
    assert (opt_ml / "model" / "model.onnx").is_file()

    # Both pages show the search; they open offline without errors and are not blank.
    for page_path in (tune_dir / "tune.html", out / "report.html"):
        page = visit(page_path, tmp_path / f"{page_path.stem}.png", height=1600)
        assert page.console == [] and external_resources(page.dom) == []
        assert f'data-trial="{best["number"]}"' in page.dom and 'id="search"' in page.dom
        shown = dict(re.findall(r'data-metric="(\w+)">([^<]+)<', page.dom))
        assert shown["search_best"] == f"{best['value']:.4f}"
        with Image.open(page.screenshot) as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 20 and (pixels < 100).mean() > 0.005, "the page looks blank"

    # Asked again, the study continues from its database instead of starting over.
    status, log = tune(capsys, "--trials", "7", "--batch-sizes", "4,8", "--no-final")
    assert status == 0, log[-3000:]
    assert "continuing the study" in log and "6 trials already finished" in log
    assert "features: train: using the cache" in log and "computing" not in log
    assert len(json.loads((tune_dir / "trials.json").read_text())["trials"]) == 7


@pytest.mark.parametrize("args, message", [
    (["--search", "lr,momentum"], "--search takes some of"),
    (["--lr", "0.1"], "lr are searched: do not also fix them"),
    (["--freeze", "none"], "needs freeze=all"),
    (["--lr-min", "0.1", "--lr-max", "0.01"], "need 0 < --lr-min < --lr-max"),
    (["--hp", "epochs"], "is not NAME=VALUE"),
    (["--trials", "0"], "--trials must be >= 1"),
    (["--batch_size_typo", "3"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2_with_a_reason(opt_ml, capsys, args, message):
    status, log = tune(capsys, *args)
    assert status == 2, log[-2000:]
    assert message in (opt_ml / "output" / "failure").read_text()
