"""A small real model directory for the serving tests (random ResNet18, three breeds)."""

from __future__ import annotations

from pathlib import Path

import pytest

BREEDS = ["Beagle", "Siberian husky", "Toy poodle"]


def make_model_dir(model_dir: Path, classes: list[str] = BREEDS, arch: str = "resnet18", seed: int = 0):
    """Write model.pt/model.onnx/model.json for a randomly initialised ``arch``; returns the torch model."""
    import torch
    import torchvision

    from dogbreed.artifacts import ModelMetadata
    from dogbreed.training.export import export_model_dir

    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(classes)).eval()
    model_dir.mkdir(parents=True, exist_ok=True)
    export_model_dir(model, ModelMetadata(arch=arch, classes=list(classes)), model_dir)
    return model


@pytest.fixture(scope="session")
def torch_model_and_dir(tmp_path_factory):
    """(torch model, model dir) of the same network."""
    model_dir = tmp_path_factory.mktemp("serving-model")
    model = make_model_dir(model_dir)
    return model, model_dir


@pytest.fixture(scope="session")
def model_dir(torch_model_and_dir) -> Path:
    return torch_model_and_dir[1]


@pytest.fixture(scope="session")
def predictor(model_dir):
    from dogbreed.serving.predictor import Predictor

    return Predictor(model_dir, threads=2, max_payload_bytes=2 * 1024 * 1024, max_image_pixels=4_000_000)


@pytest.fixture(autouse=True)
def fresh_user_module(monkeypatch):
    """Each test imports its own ``code/inference.py``: no module, path or PYTHONPATH left behind.

    A worker imports the user module once; tests load several, and Python would
    otherwise hand the first one back from ``sys.modules``.
    """
    import os
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))
    pythonpath = os.environ.get("PYTHONPATH")  # the toolkit prepends code/ to it
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if Path(getattr(sys.modules[name], "__file__", None) or "/").parent.name == "code":
            del sys.modules[name]
    if pythonpath is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = pythonpath
