"""The data check before the first epoch, on a copy of some shared photos with planted findings, and the
loss's class weights (class_weights=balanced)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import optuna
import pytest
import torch
import torchvision
from PIL import Image

from dogbreed.architectures import architecture
from dogbreed.job_outputs import DATA_CHECK_FILE, DataCheck, Leak
from dogbreed.training import stages
from dogbreed.training.config import JobPaths, TrainConfig
from dogbreed.training.data import class_name, scan_split
from dogbreed.training.data_check import balanced_class_weights, check_data, log_data_check
from dogbreed.training.failure import TrainingError
from dogbreed.training.job import main
from dogbreed.tune.search import SearchSpace
from tests.unit.training.conftest import fast_args, make_split

PER_SPLIT = {"train": 6, "valid": 3, "test": 3}  # photos copied per class


@pytest.fixture
def planted(tmp_path, dogs3) -> Path:
    """A few real photos per class and split, plus: a copy of a train photo in train and one in test, a grey
    and a CMYK conversion and a 48x40 picture (in train)."""
    root = tmp_path / "photos"
    for split, n in PER_SPLIT.items():
        for folder in sorted((dogs3 / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for photo in sorted(folder.glob("*.jpg"))[:n]:
                shutil.copy(photo, root / split / folder.name / photo.name)
    beagles, huskies = root / "train" / "001.Beagle", root / "train" / "002.Siberian_husky"
    first = sorted(beagles.iterdir())[0]
    shutil.copy(first, beagles / "copy_in_train.jpg")
    shutil.copy(first, root / "test" / "001.Beagle" / "copy_in_test.jpg")
    with Image.open(sorted(huskies.iterdir())[0]) as photo:
        photo.convert("L").save(huskies / "grey.jpg")
        photo.convert("CMYK").save(huskies / "cmyk.jpg")
        photo.resize((48, 40)).save(huskies / "tiny.jpg")
    return root


def scan(root: Path) -> list:
    train = scan_split("train", root / "train")
    return [train] + [scan_split(s, root / s, train.class_dirs) for s in ("valid", "test")]


def test_the_check_finds_each_planted_file_and_the_log_names_them(planted, caplog):
    splits = scan(planted)
    classes = [class_name(d) for d in splits[0].class_dirs]
    check = check_data(splits, classes, image_size=64, balanced=False)
    original = f"train/001.Beagle/{sorted((planted / 'train' / '001.Beagle').glob('n*.jpg'))[0].name}"
    first = "train/001.Beagle/copy_in_train.jpg"  # the first in file order
    assert check.counts == {"train": (7, 9, 6), "valid": (3, 3, 3), "test": (4, 3, 3)}
    assert check.unreadable == {"train": 0, "valid": 0, "test": 0}
    assert check.small == ("train/002.Siberian_husky/tiny.jpg",)
    assert check.grey == ("train/002.Siberian_husky/grey.jpg",)
    assert check.cmyk == ("train/002.Siberian_husky/cmyk.jpg",)
    assert check.duplicates == ((first, original),)
    assert check.leaks == (Leak("train", first, "test", "test/001.Beagle/copy_in_test.jpg"),)
    assert check.class_weights is None

    with caplog.at_level(logging.INFO, logger="dogbreed.training"):
        log_data_check(check)
    assert "train 22 (7/9/6); valid 9 (3/3/3); test 10 (4/3/3)" in caplog.text
    assert f"1 files are in two splits (1 in train/test): {first} = test/001.Beagle/copy_in_test.jpg" in caplog.text
    for name in ("tiny.jpg", "grey.jpg", "cmyk.jpg", original):
        assert name in caplog.text


def test_leakage_warns_by_default_and_on_leakage_fail_fails_the_job_with_one_line(opt_ml, planted, caplog, tmp_path):
    first_copy, leak = "train/001.Beagle/copy_in_train.jpg", "test/001.Beagle/copy_in_test.jpg"
    config = TrainConfig(arch="resnet18", image_size=64, resize_size=72)
    with caplog.at_level(logging.WARNING, logger="dogbreed.training"):
        data = stages.load_data(config, job_paths(planted, tmp_path / "loaded"), torch.device("cpu"))
    assert data.check.leaks and len(data.train.samples) == 22  # warned, and the job goes on
    assert f"leakage: 1 files are in two splits (1 in train/test): {first_copy} = {leak}" in caplog.text

    channels = [f"--{s}={planted / s}" for s in PER_SPLIT]
    assert main(fast_args(*channels, "--on_leakage", "fail")) == 1
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason == f"on_leakage=fail: 1 files are in two splits (1 in train/test): {first_copy} = {leak}\n"
    # The check's findings are written before the job fails.
    written = DataCheck.read(opt_ml / "output" / "data")
    assert written.leaks == data.check.leaks and written.counts == data.check.counts


def job_paths(root: Path, output: Path) -> JobPaths:
    """Channels under ``root``, everything the job writes under ``output``."""
    return JobPaths(
        train=root / "train", valid=root / "valid", test=root / "test", pretrained=output / "none",
        features=output / "none", model_dir=output / "model", output_data_dir=output,
        checkpoint_dir=output / "checkpoints",
    )


def test_balanced_weights_are_n_over_c_times_n_c_in_the_job_and_the_tuner_learner(opt_ml, tmp_path):
    data_dir = opt_ml / "input" / "data"
    shutil.rmtree(data_dir / "train")
    make_split(data_dir / "train", per_class=8, seed=1)
    for name, keep in (("002.Afghan_hound", 4), ("063.German_shepherd_dog", 2)):  # counts 8, 4, 2
        for extra in sorted((data_dir / "train" / name).iterdir())[keep:]:
            extra.unlink()
    paths = job_paths(data_dir, tmp_path / "out")
    config = TrainConfig(arch="resnet18", image_size=64, resize_size=72, class_weights="balanced")
    data = stages.load_data(config, paths, torch.device("cpu"))
    expected = [14 / (3 * 8), 14 / (3 * 4), 14 / (3 * 2)]
    assert data.check.class_weights == pytest.approx(expected)
    assert json.loads((tmp_path / "out" / DATA_CHECK_FILE).read_text())["class_weights"] == pytest.approx(expected)
    for criterion in (
        stages.make_criterion(config, data, torch.device("cpu")),
        stages.head_learner(  # the tuner's trials train through it
            config, data, torchvision.models.resnet18(num_classes=3), architecture("resnet18"), torch.device("cpu"), False
        ).criterion,
    ):
        assert criterion.weight.tolist() == pytest.approx(expected)
    unweighted = dataclasses.replace(config, class_weights="none")
    assert stages.make_criterion(unweighted, data, torch.device("cpu")).weight is None


def test_a_class_without_training_images_cannot_be_balanced():
    assert balanced_class_weights([3, 1], ["a", "b"]) == pytest.approx((4 / 6, 4 / 2))
    with pytest.raises(TrainingError, match="class_weights=balanced: no readable training images for 1 classes: b"):
        balanced_class_weights([3, 0, 2], ["a", "b", "c"])


def test_the_tuner_can_search_class_weights():
    trial = optuna.trial.FixedTrial({"class_weights": "balanced", "lr": 0.01})
    assert SearchSpace(names=("lr", "class_weights")).suggest(trial) == {"lr": 0.01, "class_weights": "balanced"}


def test_a_palette_of_greys_is_grey_and_a_coloured_palette_is_not(tmp_path):
    for name, colour in (("grey", (90, 90, 90)), ("red", (200, 30, 30))):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        Image.new("RGB", (80, 80), colour).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "p.png")
    split = scan_split("train", tmp_path / "train")
    assert check_data([split], ["grey", "red"], image_size=64, balanced=False).grey == ("train/grey/p.png",)
