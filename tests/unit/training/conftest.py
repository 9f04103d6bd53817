"""Small generated image sets and a fake torchvision weights cache for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import dogbreed.training.model

CLASS_DIRS = ["001.Affenpinscher", "002.Afghan_hound", "063.German_shepherd_dog"]
SIZE = ["--image-size", "64", "--resize-size", "72"]


def make_split(root: Path, class_dirs=CLASS_DIRS, per_class: int = 4, seed: int = 0, shift: int = 0) -> Path:
    """``root/<class>/<i>.jpg``: small JPEGs whose colour depends on the class (learnable).

    ``shift`` gives each class the colour of the class ``shift`` places further: a split
    that contradicts one made without it.
    """
    rng = np.random.default_rng(seed)
    for c, name in enumerate(class_dirs):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        hue = (c + shift) % len(class_dirs)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (48, 64, 3)) + np.array([hue * 90, 200 - hue * 90, 100])
            Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(folder / f"{i:03d}.jpg")
    return root


@pytest.fixture(scope="session")
def fake_torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME holding random resnet18 weights in torchvision's cache layout."""
    home = tmp_path_factory.mktemp("torch_home")
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(1234)
    torch.save(torchvision.models.resnet18().state_dict(), cache / "resnet18-f37072fd.pth")
    return home


@pytest.fixture(scope="session")
def fake_weights(fake_torch_home) -> Path:
    return fake_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """No test may reach the network: torchvision's download fails at once."""

    def refuse(arch):
        raise ConnectionError("downloads are disabled in the unit tests")

    monkeypatch.setattr(dogbreed.training.model, "_download_state_dict", refuse)


@pytest.fixture
def opt_ml(tmp_path, monkeypatch, fake_torch_home) -> Path:
    """An /opt/ml for one job with train/valid/test channels of generated images."""
    root = tmp_path / "opt_ml"
    for name in ("SM_CHANNEL_TRAIN", "SM_CHANNEL_VALID", "SM_CHANNEL_TEST", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR",
                 "DOGBREED_CHECKPOINT_DIR", "SM_CHANNEL_PRETRAINED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOGBREED_OPT_ML", str(root))
    monkeypatch.setenv("TORCH_HOME", str(fake_torch_home))
    data = root / "input" / "data"
    make_split(data / "train", per_class=8, seed=1)
    make_split(data / "valid", per_class=4, seed=2)
    make_split(data / "test", per_class=4, seed=3)
    (root / "input" / "config").mkdir(parents=True)
    return root


def fast_args(*extra: str) -> list[str]:
    """Flags for a quick CPU run: resnet18 and 64-pixel crops (DataLoader workers as by default), no int8
    export (it adds about 1.5 s to each small job; test_quantize.py and test_end_to_end turn it on)."""
    return ["--arch", "resnet18", "--batch_size", "8", *SIZE, "--int8", "false", *extra]
