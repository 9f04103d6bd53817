"""Which test photos the report explains, and that explaining them never fails a job.

A whole job writing them, and the report showing them, is tested in test_job_report.py.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from dogbreed.architectures import architecture
from dogbreed.preprocessing import Preprocessing
from dogbreed.training.data import class_name, scan_split
from dogbreed.training.explanations import MAX_CLASSES, MAX_MISTAKES, Explainer, choose, write_explanations
from dogbreed.training.loop import Predictions
from dogbreed.training.model import build_network
from tests.unit.training.conftest import CLASS_DIRS, make_split

RESNET18 = architecture("resnet18")


def predictions(rows: list[tuple[int, int, float]]) -> Predictions:
    """``(true, predicted, probability)`` per image, indexed in order."""
    true, predicted, probability = zip(*rows)
    return Predictions(torch.arange(len(rows)), torch.tensor(true), torch.tensor(predicted),
                       torch.tensor(probability))


def test_at_133_classes_the_worst_mistakes_then_the_weakest_classes_best_right_answers():
    rng = np.random.default_rng(0)
    rows = []
    for c in range(133):  # 6 photos a class; class c gets c % 7 of them wrong (class 6 gets 6: none right)
        for k in range(6):
            wrong = k < c % 7
            rows.append((c, (c + 1) % 133 if wrong else c, float(rng.uniform(0.2, 1.0))))
    picks = choose(predictions(rows))

    mistakes, correct = picks[:MAX_MISTAKES], picks[MAX_MISTAKES:]
    assert all(p.kind == "mistake" for p in mistakes) and all(p.kind == "correct" for p in correct)
    worst = sorted((i for i, (t, p, _) in enumerate(rows) if t != p), key=lambda i: -rows[i][2])[:MAX_MISTAKES]
    assert [p.index for p in mistakes] == worst
    # 12 classes, each with 5 of 6 wrong (accuracy 1/6, the lowest of the classes with a right answer), in class
    # order; each by its most confident right answer.
    assert len(correct) == MAX_CLASSES
    assert [p.true for p in correct] == [c for c in range(133) if c % 7 == 5][:MAX_CLASSES]
    for pick in correct:
        right = [i for i, (t, p, _) in enumerate(rows) if t == p == pick.true]
        assert pick.index == max(right, key=lambda i: rows[i][2]) and pick.predicted == pick.true


def test_few_classes_show_every_class_with_a_right_answer_and_every_mistake():
    picks = choose(predictions([(0, 0, 0.9), (0, 1, 0.6), (1, 0, 0.8), (1, 0, 0.7), (2, 2, 0.5), (2, 2, 0.95)]))
    assert [(p.kind, p.index) for p in picks] == [("mistake", 2), ("mistake", 3), ("mistake", 1),
                                                  ("correct", 0), ("correct", 5)]


@pytest.fixture
def explainer() -> Explainer:
    torch.manual_seed(0)
    return Explainer(build_network(RESNET18, len(CLASS_DIRS)).eval(), RESNET18,
                     [class_name(d) for d in CLASS_DIRS], Preprocessing(resize_size=72, crop_size=64,
                                                                        mean=RESNET18.mean, std=RESNET18.std),
                     torch.device("cpu"))


def test_a_photo_that_no_longer_decodes_is_skipped(tmp_path, explainer):
    split = scan_split("test", make_split(tmp_path / "test", per_class=2))
    split.samples[1][0].write_bytes(b"not a picture any more")
    write_explanations(tmp_path / "out", explainer, split,
                       predictions([(0, 0, 0.9), (0, 1, 0.8), (1, 1, 0.7), (1, 1, 0.6), (2, 0, 0.5), (2, 2, 0.4)]))
    index = json.loads((tmp_path / "out" / "explanations" / "index.json").read_text())
    assert [(p["kind"], p["image"]) for p in index["photos"]] == [
        ("mistake", "063.German_shepherd_dog/000.jpg"), ("correct", "001.Affenpinscher/000.jpg"),
        ("correct", "063.German_shepherd_dog/001.jpg"), ("correct", "002.Afghan_hound/000.jpg")]
    files = sorted(p.name for p in (tmp_path / "out" / "explanations").iterdir())
    assert files == ["correct_01_predicted.jpg", "correct_02_predicted.jpg", "correct_03_predicted.jpg",
                     "index.json", "mistake_01_predicted.jpg", "mistake_01_true.jpg"]


def test_a_failure_costs_a_warning_and_leaves_no_half_written_folder(tmp_path, explainer, monkeypatch, caplog):
    split = scan_split("test", make_split(tmp_path / "test", per_class=1))

    def broken(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("dogbreed.training.explanations.forward_with_feature_map", broken)
    with caplog.at_level(logging.WARNING):
        write_explanations(tmp_path / "out", explainer, split, predictions([(0, 0, 0.9), (1, 0, 0.8), (2, 2, 0.7)]))
    assert "explanations could not be written (RuntimeError: out of memory)" in caplog.text
    assert not (tmp_path / "out" / "explanations").exists()
