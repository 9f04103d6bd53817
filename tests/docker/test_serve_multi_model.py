"""The serving image on a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true), driven as SageMaker drives it.

SageMaker downloads each model.tar.gz it is asked for, unpacks it under /opt/ml/models and
tells the container through POST /models; these tests mount such a tree read-only and do
the same: two models trained on different class sets (the shared trained model, and a
copy naming its classes differently, with a failed int8 gate), and one with its own
code/inference.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import requests

from tests.docker.serve_container import Container

pytestmark = pytest.mark.docker

MODELS = "/opt/ml/models"
# code/inference.py of the third model: only the answer's format is its own.
LABEL_ONLY_INFERENCE = '''\
import json


def output_fn(prediction, accept):
    return json.dumps({"label": prediction["predicted_label"]}), "application/json"
'''
MODEL_FILES = ("model.json", "model.onnx", "model.int8.onnx", "head.npz")


def copy_model(source: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def model_tree(trained_model_dir, tmp_path_factory) -> Path:
    """``<root>/{first,renamed,custom,huge}/model``, as SageMaker unpacks models under /opt/ml/models."""
    root = tmp_path_factory.mktemp("models")
    os.chmod(root, 0o755)
    copy_model(Path(trained_model_dir), root / "first" / "model")
    renamed = copy_model(Path(trained_model_dir), root / "renamed" / "model")
    meta = json.loads((renamed / "model.json").read_text())
    meta["classes"] = [f"Other {name}" for name in meta["classes"]]
    # An int8 export far worse than fp32: auto must serve this model's model.onnx.
    meta["int8"]["int8_valid_top1"] = 0.0
    (renamed / "model.json").write_text(json.dumps(meta))
    custom = copy_model(Path(trained_model_dir), root / "custom" / "model")
    (custom / "code").mkdir()
    (custom / "code" / "inference.py").write_text(LABEL_ONLY_INFERENCE)
    # A model no container has the memory for: a sparse model.onnx of 1 TiB.
    huge = copy_model(Path(trained_model_dir), root / "huge" / "model")
    with open(huge / "model.onnx", "r+b") as onnx:
        onnx.truncate(2**40)
    return root


@pytest.fixture(scope="module")
def classes(trained_model_dir) -> list[str]:
    return json.loads((Path(trained_model_dir) / "model.json").read_text())["classes"]


@pytest.fixture(scope="module")
def server(serve_image, model_tree):
    container = Container(serve_image, model_tree, {"SAGEMAKER_MULTI_MODEL": "true"}, mount_at=MODELS)
    try:
        yield container
    finally:
        container.remove()


def load(server: Container, name: str, folder: str) -> requests.Response:
    body = {"model_name": name, "url": f"{MODELS}/{folder}/model"}
    return requests.post(server.url + "/models", json=body, timeout=300)


def invoke(server: Container, name: str, body: bytes, content_type: str = "image/jpeg") -> requests.Response:
    return requests.post(f"{server.url}/models/{name}/invoke", data=body,
                         headers={"Content-Type": content_type}, timeout=60)


def test_multi_model_contract(server, real_photos, classes):
    photo = real_photos[0].read_bytes()
    # Healthy with no model loaded.
    assert server.wait_for_ping().status_code == 200
    assert requests.get(server.url + "/models", timeout=10).json()["models"] == []

    for name, folder in (("first.tar.gz", "first"), ("renamed.tar.gz", "renamed")):
        response = load(server, name, folder)
        assert response.status_code == 200, (name, response.text, server.logs()[-3000:])
    assert load(server, "first.tar.gz", "first").status_code == 409

    listed = requests.get(server.url + "/models", timeout=10).json()["models"]
    assert sorted(m["modelName"] for m in listed) == ["first.tar.gz", "renamed.tar.gz"]
    described = requests.get(server.url + "/models/renamed.tar.gz", timeout=10)
    assert described.status_code == 200, described.text
    assert described.json()["modelName"] == "renamed.tar.gz"

    # Each model answers with its own class names.
    first = invoke(server, "first.tar.gz", photo)
    assert first.status_code == 200, first.text
    assert first.json()["predicted_label"] in classes
    renamed = invoke(server, "renamed.tar.gz", photo)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["predicted_label"] == f"Other {first.json()['predicted_label']}"
    # The int8 gate is each model's own.
    logs = server.logs()
    assert re.search(rf"model loaded from {MODELS}/renamed/model: .*, fp32, ", logs), logs[-3000:]

    # A bad payload is the single-model 4xx JSON, and the model keeps serving.
    refused = invoke(server, "first.tar.gz", photo, "text/csv")
    assert refused.status_code == 415 and "image/jpeg" in refused.json()["error"]
    broken = invoke(server, "first.tar.gz", b"not an image")
    assert broken.status_code == 400 and broken.json()["error"]
    assert invoke(server, "first.tar.gz", photo).status_code == 200

    # Unloaded: 404 from then on, and the other model still answers.
    assert requests.delete(server.url + "/models/first.tar.gz", timeout=120).status_code == 200
    assert invoke(server, "first.tar.gz", photo).status_code == 404
    assert requests.get(server.url + "/models/first.tar.gz", timeout=10).status_code == 404
    assert requests.delete(server.url + "/models/first.tar.gz", timeout=10).status_code == 404
    assert invoke(server, "renamed.tar.gz", photo).status_code == 200
    # Loaded again under the same name, it answers again.
    assert load(server, "first.tar.gz", "first").status_code == 200
    assert invoke(server, "first.tar.gz", photo).status_code == 200


def test_code_inference_py_per_model(server, real_photos, classes):
    server.wait_for_ping()
    assert load(server, "custom.tar.gz", "custom").status_code == 200
    response = invoke(server, "custom.tar.gz", real_photos[0].read_bytes())
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"label"} and response.json()["label"] in classes


def test_no_memory_for_a_model_is_507_and_nothing_stays_loaded(server):
    server.wait_for_ping()
    for _ in range(2):  # as SageMaker retries after unloading another model: 507 again, not 409
        response = load(server, "huge.tar.gz", "huge")
        assert response.status_code == 507, (response.status_code, response.text)
        assert requests.get(server.url + "/models/huge.tar.gz", timeout=10).status_code == 404
    assert "not enough memory to load the model" in server.logs()


def test_single_model_paths_are_404_json(server):
    server.wait_for_ping()
    response = requests.post(server.url + "/invocations", data=b"x", timeout=10)
    assert response.status_code == 404
    assert "/models/<name>/invoke" in response.json()["error"]
