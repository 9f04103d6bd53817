"""Incremental training (the ``model`` channel): a job continues an earlier job's model, or grows its head.

The jobs run in-process on a few real photos: the pretrained EfficientNet-Lite0, frozen, its head
trained on cached features at 128 pixels.
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import pytest
import torch

from dogbreed.artifacts import METADATA_FILE, TORCH_FILE, ModelMetadata
from dogbreed.training.environment import TrainingEnvironment
from dogbreed.training.failure import TrainingError
from dogbreed.training.incremental import continue_from, find_previous_model
from dogbreed.training.job import main

BREEDS = ["001.Beagle", "002.Siberian_husky", "003.Toy_poodle"]
TRAIN_PER_CLASS, VALID_PER_CLASS = 16, 15  # few photos: each job computes their features once
HYPERPARAMETERS = ["--arch", "efficientnet_lite0", "--pretrained", "imagenet", "--freeze", "all",
                   "--image-size", "128", "--resize-size", "146", "--augment", "false", "--batch-size", "16",
                   "--lr", "0.003", "--patience", "0", "--int8", "false", "--debug", "false", "--profile", "false"]


def subset(dogs3: Path, root: Path, breeds: list[str]) -> Path:
    """``root/{train,valid}/<breed>``: links to the first photos of each breed's train and valid splits."""
    for split, count in (("train", TRAIN_PER_CLASS), ("valid", VALID_PER_CLASS)):
        for breed in breeds:
            folder = root / split / breed
            folder.mkdir(parents=True)
            for photo in sorted((dogs3 / split / breed).glob("*.jpg"))[:count]:
                (folder / photo.name).symlink_to(photo)
    return root


def run_job(data: Path, out: Path, *extra: str, model: Path | None = None, features: Path | None = None):
    """One training job on ``data`` writing to ``out``: its exit status and environment."""
    environ = {"DOGBREED_OPT_ML": str(out)}
    for name, channel in (("MODEL", model), ("FEATURES", features)):
        if channel is not None:
            environ[f"SM_CHANNEL_{name}"] = str(channel)
    env = TrainingEnvironment.from_env(environ)
    argv = [*HYPERPARAMETERS, "--train", str(data / "train"), "--valid", str(data / "valid"),
            "--test", str(data / "no-test"), *extra]
    return main(argv, env=env), env


def metrics(env: TrainingEnvironment) -> dict:
    return json.loads((env.output_data_dir / "metrics.json").read_text())


def valid_accuracy(env: TrainingEnvironment) -> dict[str, float]:
    """Each class's accuracy on the validation photos (the best epoch's)."""
    with open(env.output_data_dir / "valid" / "per_class_accuracy.csv", newline="") as f:
        return {row["class"]: int(row["correct"]) / int(row["images"]) for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def two_breeds(dogs3, tmp_path_factory):
    """A model of Beagle and Siberian husky (3 epochs), its data and its job's environment."""
    root = tmp_path_factory.mktemp("incremental")
    data = subset(dogs3, root / "two", BREEDS[:2])
    status, env = run_job(data, root / "job2", "--epochs", "3")
    assert status == 0, (env.failure_path.read_text() if env.failure_path.exists() else "")
    return data, env


def test_a_two_breed_model_extended_to_three_keeps_its_breeds_and_learns_the_third(two_breeds, dogs3, tmp_path,
                                                                                     capsys):
    _, old = two_breeds
    before = valid_accuracy(old)
    assert min(before.values()) >= 0.85, before
    data = subset(dogs3, tmp_path / "three", BREEDS)
    capsys.readouterr()
    status, env = run_job(data, tmp_path / "job3", "--epochs", "3", model=old.model_dir)
    assert status == 0, env.failure_path.read_text()
    assert (f"incremental training from {old.model_dir}: kept 2 classes (Beagle, Siberian husky), "
            "added 1 (Toy poodle), dropped 0\n") in capsys.readouterr().out
    after = valid_accuracy(env)
    assert list(after) == ["Beagle", "Siberian husky", "Toy poodle"]
    for breed, accuracy in before.items():  # within 2 of the breed's 15 photos of the 2-breed model
        assert after[breed] >= accuracy - 2 / VALID_PER_CLASS, (breed, before, after)
    assert after["Toy poodle"] >= 0.8, after  # chance is 1/3
    assert ModelMetadata.load(env.model_dir).classes == ["Beagle", "Siberian husky", "Toy poodle"]


def test_the_same_classes_continue_from_the_model_tarball(two_breeds, tmp_path):
    data, old = two_breeds
    channel = tmp_path / "channel"
    channel.mkdir()
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:  # as SageMaker packs /opt/ml/model
        for path in sorted(old.model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    # The trunk is ImageNet's (freeze=all) in both jobs: the first job's feature cache fits.
    features = old.output_data_dir / "features"
    status, env = run_job(data, tmp_path / "cont", "--epochs", "1", model=channel, features=features)
    assert status == 0, env.failure_path.read_text()
    first, before = metrics(env)["history"][0], metrics(old)
    assert {s["source"] for s in metrics(env)["features"].values()} == {"cache"}
    assert abs(first["valid_accuracy"] - before["final"]["valid_accuracy"]) <= 0.05, (first, before["final"])
    # It starts where the old model ended, not where a fresh head starts.
    assert first["valid_loss"] < before["history"][0]["valid_loss"], (first, before["history"])


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--arch", "resnet18"], "arch=efficientnet_lite0 (this job: arch=resnet18)"),
        (["--image-size", "160", "--resize-size", "182"], "image_size=128 (this job: image_size=160)"),
    ],
)
def test_another_architecture_or_image_size_fails_naming_both(two_breeds, tmp_path, flags, reason):
    data, old = two_breeds
    status, env = run_job(data, tmp_path / "job", *flags, model=old.model_dir)
    assert status == 2
    failure = env.failure_path.read_text()
    assert reason in failure and str(old.model_dir) in failure and len(failure.splitlines()) == 1
    assert not (env.model_dir / METADATA_FILE).exists()


def test_a_channel_without_a_model_fails_saying_what_it_holds(tmp_path):
    channel = tmp_path / "model"
    channel.mkdir()
    (channel / "notes.txt").write_text("no model here")
    with pytest.raises(TrainingError, match=r"holds neither model\.json nor one \.tar\.gz archive .* but notes\.txt"):
        find_previous_model(channel)
    assert find_previous_model(tmp_path / "absent") is None
    (channel / "notes.txt").unlink()
    packed = tmp_path / "packed" / "model"  # a folder packed whole: model.json is not at the top
    packed.mkdir(parents=True)
    (packed / "model.json").write_text("{}")
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
        tar.add(packed, arcname="model")
        tar.add(packed / "model.json", arcname="../model.json")  # outside the channel: never extracted
    with pytest.raises(TrainingError, match=r"model\.tar\.gz: .*model\.json is missing"):
        find_previous_model(channel)


def test_the_head_keeps_old_rows_by_name_adds_new_ones_and_drops_the_gone(two_breeds):
    """The mechanics, before any training: rows follow the class names, wherever they are in the order."""
    _, old = two_breeds
    previous = find_previous_model(old.model_dir)
    classes = ["Toy poodle", "Siberian husky", "Pug"]  # Beagle dropped, husky moved, two new
    torch.manual_seed(0)
    model = continue_from(previous, classes, "all")
    weights = torch.load(old.model_dir / TORCH_FILE, weights_only=True)
    head = model.classifier
    assert head.weight.shape == (3, 1280)
    assert torch.equal(head.weight[1], weights["classifier.weight"][1])  # Siberian husky, row 1 before
    assert torch.equal(head.bias[1], weights["classifier.bias"][1])
    for new in (0, 2):
        assert not any(torch.equal(head.weight[new], row) for row in weights["classifier.weight"])
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    assert all(torch.equal(v, weights[k]) for k, v in trunk.items())
    assert all(not p.requires_grad for name, p in model.named_parameters() if not name.startswith("classifier."))
