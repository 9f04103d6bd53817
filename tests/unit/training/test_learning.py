"""The job learns, and early stopping keeps the best epoch's weights as the model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dogbreed.tools.sample import generate
from dogbreed.training.checkpoints import CHECKPOINT_FILE
from dogbreed.training.job import main
from tests.unit.training.conftest import SIZE, make_split


def test_learns_the_generated_sample_far_above_chance(tmp_path, monkeypatch, capsys):
    """ResNet18 from random weights on the demo's three coat patterns: chance is 1/3."""
    data = generate(tmp_path / "sample", per_class=40, seed=0)
    monkeypatch.setenv("DOGBREED_OPT_ML", str(tmp_path / "opt_ml"))
    args = ["--train", str(data / "train"), "--valid", str(data / "valid"), "--test", str(data / "test"),
            "--arch", "resnet18", "--pretrained", "none", "--freeze", "none", "--epochs", "4", "--patience", "2",
            "--batch_size", "16", "--lr", "0.0003", *SIZE]
    assert main(args) == 0, capsys.readouterr().out[-3000:]
    metrics = json.loads((tmp_path / "opt_ml" / "output" / "data" / "metrics.json").read_text())
    final = metrics["final"]
    assert final["valid_accuracy"] >= 0.9 and final["test_accuracy"] >= 0.9, metrics
    # Accuracy is what the confusion matrix says: hits on the diagonal over all images.
    matrix = [[int(v) for v in row.split(",")[1:]]
              for row in (tmp_path / "opt_ml" / "output" / "data" / "test" / "confusion_matrix.csv")
              .read_text().splitlines()[1:]]
    hits = sum(matrix[i][i] for i in range(len(matrix)))
    assert sum(map(sum, matrix)) == 18
    assert final["test_accuracy"] == pytest.approx(hits / 18, abs=1e-6)  # computed in float32


def test_early_stopping_stops_at_the_right_epoch_and_exports_the_best_weights(opt_ml, fake_weights, capsys):
    """A valid split whose colours contradict the train split's: the better the fit, the worse valid gets."""
    data = opt_ml / "input" / "data"
    shutil.rmtree(data / "valid")
    make_split(data / "valid", per_class=4, seed=2, shift=1)
    patience, epochs = 2, 12
    args = ["--arch", "resnet18", "--pretrained", str(fake_weights), "--batch_size", "8", "--lr", "0.01",
            "--epochs", str(epochs), "--patience", str(patience), *SIZE]
    assert main(args) == 0
    out = capsys.readouterr().out
    metrics = json.loads((opt_ml / "output" / "data" / "metrics.json").read_text())
    losses = [h["valid_loss"] for h in metrics["history"]]
    best = losses.index(min(losses)) + 1
    # It stopped `patience` epochs after the best one, none of which improved on it.
    assert metrics["final"]["best_epoch"] == best
    assert metrics["final"]["epochs_trained"] == len(losses) == best + patience < epochs, losses
    assert all(loss >= losses[best - 1] for loss in losses[best:])
    assert f"early stopping: valid_loss has not improved for {patience} epochs" in out

    # The exported model is the best epoch's weights, not the last epoch's (the head on
    # cached features: the checkpoint holds fc alone) ...
    model = torch.load(opt_ml / "model" / "model.pt", weights_only=True)
    last = torch.load(opt_ml / "checkpoints" / CHECKPOINT_FILE, weights_only=True)["model"]
    assert last.keys() == {"weight", "bias"}
    assert not torch.equal(model["fc.weight"], last["weight"])
    # ... exactly those of a job that trains only up to that epoch.
    assert main([*args, "--epochs", str(best), "--patience", "0", "--model-dir", str(opt_ml / "best"),
                 "--output-data-dir", str(opt_ml / "best-data"), "--checkpoint-dir", str(opt_ml / "best-ckpt")]) == 0
    reference = torch.load(opt_ml / "best" / "model.pt", weights_only=True)
    assert model.keys() == reference.keys()
    for name in model:
        assert torch.equal(model[name], reference[name]), name
