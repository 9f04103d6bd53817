"""Fixtures for the container tests: the built images, weights, and one real training run.

The images come from `make build` (`make test` builds them first); a missing image is
an error, not a skip. One training run on the real photos is shared by the training and
serving container tests (`trained_run`, `trained_model_dir`).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from dogbreed.tools.opt_ml import build_tree

TRAIN_IMAGE = os.environ.get("TRAIN_IMAGE", "dogbreed-train:latest")
SERVE_IMAGE = os.environ.get("SERVE_IMAGE", "dogbreed-serve:latest")

# Small and quick on two CPU cores, but the real pipeline end to end; everything else
# (batch_size, num_workers, image_size) at its default, under Docker's default 64 MB /dev/shm.
QUICK_HYPERPARAMETERS = {"arch": "resnet18", "epochs": "2", "seed": "1"}
# The run whose accuracy counts: the course's recipe (frozen trunk, new head, cached features) on
# the ImageNet-pretrained EfficientNet-Lite0 whose weights come with the image.
TRANSFER_HYPERPARAMETERS = {"arch": "efficientnet_lite0", "pretrained": "imagenet", "epochs": "2", "seed": "1"}


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.docker)


def docker(*args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run the docker CLI, capturing text output; raise with the output on failure."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _require_image(image: str) -> str:
    try:
        docker("info", timeout=60)
    except (OSError, AssertionError) as exc:
        pytest.fail(f"no Docker engine answers ({exc}); .ci/run starts one")
    if docker("image", "inspect", image, check=False, timeout=60).returncode != 0:
        pytest.fail(f"image {image} is missing; run `make build` first (`make test` does)")
    return image


@pytest.fixture(scope="session")
def train_image() -> str:
    return _require_image(TRAIN_IMAGE)


@pytest.fixture(scope="session")
def serve_image() -> str:
    return _require_image(SERVE_IMAGE)


@pytest.fixture(scope="session")
def fake_resnet18_weights(tmp_path_factory) -> Path:
    """Random ResNet18 weights under torchvision's file name for the ImageNet checkpoint.

    Nothing can be downloaded here, so this stands in for the real file: the code path
    (find the file, load it, replace fc) is the one real weights take.
    """
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@dataclass
class TrainingRun:
    """A finished container training run: its /opt/ml tree, exit code and log."""

    opt_ml: Path
    returncode: int
    log: str

    @property
    def model_dir(self) -> Path:
        return self.opt_ml / "model"

    @property
    def failure(self) -> str | None:
        path = self.opt_ml / "output" / "failure"
        return path.read_text() if path.exists() else None


def run_training(
    image: str,
    opt_ml: Path,
    command: list[str] | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 900,
) -> TrainingRun:
    """`docker run` the training image over ``opt_ml`` as SageMaker would (Docker's defaults), and wait."""
    name = f"dogbreed-test-{uuid.uuid4().hex[:8]}"
    args = ["run", "--rm", "--name", name, "-v", f"{opt_ml}:/opt/ml",
            *(extra_args or []), image, *(command if command is not None else ["train"])]
    try:
        proc = docker(*args, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        docker("rm", "-f", name, check=False)
        raise
    return TrainingRun(opt_ml, proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def trained_run(train_image, dogs3, tmp_path_factory) -> TrainingRun:
    """Fine-tune the pretrained EfficientNet-Lite0 for two epochs on the real photos, in the container
    (no weights channel: they come with the image)."""
    opt_ml = build_tree(dogs3, tmp_path_factory.mktemp("opt_ml"), TRANSFER_HYPERPARAMETERS)
    run = run_training(train_image, opt_ml)
    if run.returncode != 0:
        pytest.fail(f"training container exited {run.returncode}\nfailure: {run.failure}\n{run.log[-4000:]}")
    return run


@pytest.fixture(scope="session")
def trained_model_dir(request) -> Path:
    """A model dir written by the training image; DOGBREED_TEST_MODEL_DIR overrides it."""
    override = os.environ.get("DOGBREED_TEST_MODEL_DIR")
    if override:
        return Path(override)
    return request.getfixturevalue("trained_run").model_dir


@pytest.fixture
def model_json(trained_model_dir) -> dict:
    return json.loads((trained_model_dir / "model.json").read_text())

