"""train --local and deploy --local through the SDK's local mode, on the real photos.

ModelTrainer(Mode.LOCAL_CONTAINER) runs dogbreed-train:latest over the dogs-3breeds
splits (local directories) plus a `pretrained` channel holding random ResNet18 weights
under torchvision's file name (nothing can be downloaded); LocalSession serves the
resulting model.tar.gz with dogbreed-serve:latest, and a real photo gets a breed back, with
the map of its top class (``--explain``: its box printed, the overlay saved).
One epoch with the default DataLoader workers, under the SDK's compose file, which leaves
/dev/shm at Docker's 64 MB: about a minute on two cores.
"""

from __future__ import annotations

import re
import subprocess
import tarfile

import pytest
from PIL import Image

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed.images import open_image
from dogbreed.launcher import cli
from tests.conftest import free_port
from tests.launcher.conftest import run_in_training_venv

pytestmark = [pytest.mark.docker, pytest.mark.slow]
BREEDS = {"Beagle", "Siberian husky", "Toy poodle"}


def running(image: str) -> set[str]:
    return set(subprocess.run(["docker", "ps", "-q", "--filter", f"ancestor={image}"], capture_output=True,
                              text=True).stdout.split())


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """Random ResNet18 weights made with torch in the training venv (.venv), not this one."""
    directory = tmp_path_factory.mktemp("pretrained")
    script = ("import sys, torch, torchvision; torch.manual_seed(0); "
              "torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])")
    proc = run_in_training_venv("-c", script, str(directory / "resnet18-f37072fd.pth"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return directory


def test_train_local_then_deploy_local_predicts_a_breed(aws_env, dogs3, train_image, serve_image, pretrained_dir,
                                                        real_photos, tmp_path, capsys, remove_sdk_containers):
    root = tmp_path / "local"
    code = cli.main(["train", "--local", "--image", train_image,
                     "--train", f"file://{dogs3 / 'train'}", "--valid", f"file://{dogs3 / 'valid'}",
                     "--test", f"file://{dogs3 / 'test'}", "--pretrained", f"file://{pretrained_dir}",
                     "--output", str(root),
                     "--hp", "arch=resnet18", "--hp", "epochs=1"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    model = root / "compressed_artifacts" / "model.tar.gz"
    assert out.strip().splitlines()[-1] == str(model)
    assert "valid_accuracy=" in out  # the job's metric line, streamed from the container
    with tarfile.open(model) as tar:
        assert {"model.onnx", "model.json"} <= set(tar.getnames())

    photo = next(p for p in real_photos if "Siberian" in p.parent.name)
    serving_before = running(serve_image)  # other suites may serve concurrently
    overlay = tmp_path / "cam.png"
    code = cli.main(["deploy", "--local", "--image", serve_image, "--model", str(model), "--name", "dogbreed-local",
                     "--port", str(free_port()), "--predict", str(photo), "--explain", str(overlay)])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    # One "<breed>  <probability>" line per breed, most probable first (Docker's own
    # output goes to the same stdout).
    rows = [m.groups() for m in re.finditer(r"^(\S.*?)\s+([01]\.\d{3})$", out, re.MULTILINE)]
    labels = [label for label, _ in rows]
    probabilities = [float(p) for _, p in rows]
    assert set(labels) == BREEDS, out[-2000:]
    assert probabilities == sorted(probabilities, reverse=True)
    assert abs(sum(probabilities) - 1) < 0.01
    # The trained model explains its top class; the overlay is the photo's size (at most 1024 a side).
    [line] = [line for line in out.splitlines() if line.startswith("explanation: ")]
    assert line.startswith(f"explanation: {labels[0]}, box x0=") and line.endswith(f"; overlay: {overlay}")
    with Image.open(overlay) as picture:
        assert picture.format == "PNG" and picture.size == open_image(photo).size
    # The container is gone after the command.
    assert running(serve_image) <= serving_before, "the local endpoint's container still runs"


def test_tune_local_searches_in_the_image_and_a_second_search_reuses_its_features(
        dogs3, train_image, pretrained_dir, tmp_path, capfd):
    """tune --local: python -m dogbreed.tune in the training image on the real photos, twice."""
    def search(output, *extra):
        return cli.main(["tune", "--local", "--image", train_image, "--train", str(dogs3 / "train"),
                         "--valid", str(dogs3 / "valid"), "--test", str(dogs3 / "test"),
                         "--pretrained", str(pretrained_dir), "--output", str(output), "--max-jobs", "4",
                         "--batch-sizes", "16,32", "--hp", "arch=resnet18", "--hp", "epochs=2",
                         "--hp", "image_size=112", "--hp", "resize_size=128", *extra])

    first = tmp_path / "first"
    code = search(first)
    out = capfd.readouterr().out
    assert code == 0, out[-3000:]
    assert "features: train: computing 2 view(s) of 408 images" in out
    trials = (first / "output" / "data" / "tune" / "trials.json").read_text()
    assert trials.count('"state"') == 4
    assert (first / "output" / "data" / "tune" / "tune.html").is_file()
    assert (first / "model" / "model.onnx").is_file() and (first / "output" / "data" / "report.html").is_file()
    assert re.search(r"best trial \d+: valid_accuracy=[\d.]+", out)

    # The first search's cache, handed over as --features-from: no image goes through the backbone.
    second = tmp_path / "second"
    code = search(second, "--features-from", str(first / "output" / "data" / "features"), "--no-final")
    out = capfd.readouterr().out
    assert code == 0, out[-3000:]
    assert "computing" not in out and out.count("using the cache") == 3
    assert not (second / "model" / "model.pt").exists()
