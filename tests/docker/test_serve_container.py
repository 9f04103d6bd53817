"""The serving image, run as SageMaker runs it: `docker run -p ... -v MODEL:/opt/ml/model IMAGE serve`.

Uses the image from `make build` and the model dir from `trained_model_dir` (set
DOGBREED_TEST_MODEL_DIR to reuse one). Loopback only; every wait is bounded.
"""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.docker.serve_container import Container
from tests.unit.serving.model_code import BREED_ONLY_INFERENCE, model_with_code, write_breednote

pytestmark = pytest.mark.docker

PAYLOAD_MB = 1  # small, so the over-the-limit body is cheap to send
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def classes(trained_model_dir) -> list[str]:
    return json.loads((Path(trained_model_dir) / "model.json").read_text())["classes"]


@pytest.fixture(scope="module")
def server(serve_image, trained_model_dir):
    # fp32: these tests compare the endpoint with PyTorch's float32 answers (the precision
    # choice has its own test, test_the_served_precision_is_chosen_and_logged).
    container = Container(
        serve_image, Path(trained_model_dir),
        {"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(PAYLOAD_MB), "DOGBREED_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
         "DOGBREED_PRECISION": "fp32"},
    )
    try:
        container.wait_for_ping()
        yield container
    finally:
        container.remove()


def check_prediction(response, classes, k=None):
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["predicted_label"] in classes
    assert body["predicted_label"] == classes[body["predicted_class"]]
    assert body["top_k"][0]["class"] == body["predicted_class"]
    if k is not None:
        assert len(body["top_k"]) == k
    return body


def test_ping_is_json_ok(server):
    response = server.ping()
    assert response is not None and response.status_code == 200
    assert response.headers["Content-Type"] == "application/json" and response.json() == {"status": "Healthy"}


def test_real_photos_name_a_breed(server, real_photos, classes):
    for path in real_photos:
        check_prediction(server.invoke(path.read_bytes()), classes, k=min(5, len(classes)))


def test_endpoint_answers_what_the_trained_pytorch_model_predicts(server, real_photos, trained_model_dir):
    """Both images end to end: the training image's model.pt, run in PyTorch on its own
    evaluation transform, and the serving image's answer over HTTP agree on real photos."""
    import torch

    from dogbreed.architectures import architecture
    from dogbreed.artifacts import TORCH_FILE, ModelMetadata
    from dogbreed.training.data import EvalTransform, Normalize
    from dogbreed.images import open_image
    from dogbreed.training.model import build_network

    meta = ModelMetadata.load(trained_model_dir)
    net = build_network(architecture(meta.arch), len(meta.classes))
    net.load_state_dict(torch.load(Path(trained_model_dir) / TORCH_FILE, map_location="cpu", weights_only=True))
    transform = EvalTransform(meta.preprocessing)
    batch = Normalize.of(meta.preprocessing)(torch.stack([transform(open_image(p)) for p in real_photos]))
    with torch.no_grad():
        expected = torch.softmax(net.eval()(batch), dim=1)
    k = len(meta.classes)
    for path, probs in zip(real_photos, expected):
        body = server.invoke(path.read_bytes(), headers={"X-Top-K": str(k)}).json()
        assert body["predicted_class"] == int(probs.argmax()), path
        for entry in body["top_k"]:
            assert entry["probability"] == pytest.approx(float(probs[entry["class"]]), abs=1e-4), path


@pytest.mark.parametrize("env", [{}, {"DOGBREED_PRECISION": "fp32"}], ids=["default", "fp32"])
def test_the_served_precision_is_chosen_and_logged(serve_image, trained_model_dir, real_photos, classes, env):
    """By default the gate of model.json's int8 figures decides; DOGBREED_PRECISION=fp32 overrides it."""
    from dogbreed.artifacts import ModelMetadata
    from dogbreed.serving.predictor import choose_precision

    expected, reason = choose_precision(ModelMetadata.load(trained_model_dir), env.get("DOGBREED_PRECISION", "auto"), 0.5)
    container = Container(serve_image, Path(trained_model_dir), env)
    try:
        container.wait_for_ping()
        check_prediction(container.invoke(real_photos[0].read_bytes()), classes)
        file = "model.int8.onnx" if expected == "int8" else "model.onnx"
        assert f"serving {expected} ({file}): {reason}" in container.logs()
    finally:
        container.remove()


def test_content_types_and_top_k(server, real_photos, classes):
    photo = real_photos[0].read_bytes()
    png = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(png, "PNG")
    check_prediction(server.invoke(png.getvalue(), "image/png"), classes)
    check_prediction(server.invoke(photo, "application/x-image", {"X-Top-K": "1"}), classes, k=1)
    check_prediction(server.invoke(photo, "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": "top_k=2"}), classes, k=2)


def test_explain_cam_adds_the_map_in_the_photos_pixels(server, real_photos, classes, trained_model_dir):
    """``X-Explain: cam``: the answer as before, plus the top class's map placed on the uploaded photo."""
    import numpy as np

    from dogbreed.artifacts import ModelMetadata
    from dogbreed.images import open_image

    meta = ModelMetadata.load(trained_model_dir)
    for path in real_photos[::4]:
        width, height = open_image(path.read_bytes()).size
        plain = check_prediction(server.invoke(path.read_bytes()), classes)
        body = check_prediction(server.invoke(path.read_bytes(), headers={"X-Explain": "cam"}), classes)
        e = body.pop("explanation")
        assert body == plain, path
        assert (e["method"], e["class"], e["label"]) == ("cam", plain["predicted_class"], plain["predicted_label"])
        grid = np.asarray(e["grid"])
        assert grid.shape == meta.explain.grid
        assert e["grid_region"] == pytest.approx(meta.preprocessing.crop_region(width, height), abs=0.051)
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (path, e["box"])
        assert e["logit"] == pytest.approx(grid.mean() + e["bias"], abs=1e-3)


def test_accept_png_answers_the_photo_with_its_map(server, real_photos):
    """``Accept: image/png``: the uploaded photo with the map overlaid, even when it is over 1 MiB."""
    import numpy as np

    from dogbreed.explain import OVERLAY_MAX_SIDE

    photo = real_photos[0].read_bytes()
    response = server.invoke(photo, headers={"Accept": "image/png"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == Image.open(io.BytesIO(photo)).size
    # Fine grain at the largest overlay size: a PNG past MMS's former 1 MiB response limit.
    grain = np.random.default_rng(0).integers(96, 160, (768, OVERLAY_MAX_SIDE, 3)).astype(np.uint8)
    upload = io.BytesIO()
    Image.fromarray(grain).save(upload, "JPEG", quality=50)
    response = server.invoke(upload.getvalue(), headers={"Accept": "image/png"})
    assert response.status_code == 200, response.text[:500]
    assert len(response.content) > 1024 * 1024
    assert Image.open(io.BytesIO(response.content)).size == (OVERLAY_MAX_SIDE, 768)
    refused = server.invoke(photo, headers={"Accept": "image/png", "X-Explain": "none"})
    assert refused.status_code == 400 and "X-Explain: none" in refused.json()["error"]


def bad_payloads(photo: bytes) -> dict[str, tuple[bytes, str | None, dict, int]]:
    grey = io.BytesIO()
    Image.new("L", (3000, 3000)).save(grey, "PNG")  # 9 MP, tiny on the wire
    return {
        "unsupported type": (photo, "text/csv", {}, 415),
        "no content type": (photo, None, {}, 415),
        "empty body": (b"", "image/jpeg", {}, 400),
        "text body": (b'{"url": "https://example.com/dog.jpg"}', "image/jpeg", {}, 400),
        "truncated jpeg": (photo[: len(photo) // 3], "image/jpeg", {}, 400),
        "corrupt image": (b"\xff\xd8\xff\xe0" + b"\x13" * 5000, "image/jpeg", {}, 400),
        "bad top_k": (photo, "image/jpeg", {"X-Top-K": "many"}, 400),
        "over the payload limit": (photo + b"\0" * (PAYLOAD_MB * 1024 * 1024), "image/jpeg", {}, 413),
        # Past MMS's own limit, nginx answers before MMS sees it.
        "over the server's limit": (b"\0" * (3 * PAYLOAD_MB * 1024 * 1024), "image/jpeg", {}, 413),
        "too many pixels": (grey.getvalue(), "image/png", {}, 413),
    }


def test_bad_payloads_are_4xx_json_and_the_worker_keeps_serving(server, real_photos, classes):
    photo = real_photos[0].read_bytes()
    for name, (body, content_type, headers, status) in bad_payloads(photo).items():
        response = server.invoke(body, content_type, headers)
        assert response.status_code == status, (name, response.status_code, response.text)
        assert response.headers["Content-Type"].startswith("application/json"), name
        message = response.json()["error"]
        assert isinstance(message, str) and len(message) > 20, (name, message)
        check_prediction(server.invoke(photo), classes)


def test_unknown_path_is_404_json(server):
    # nginx answers every path but /ping, /invocations and /execution-parameters; MMS's
    # own APIs (/predictions/model, /models) are not published.
    for path in ("/predict", "/predictions/model", "/models", "/.dogbreed-error/413"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"].startswith("application/json")
        assert "/invocations" in response.json()["error"]


def test_200_requests_at_concurrency_8(server, real_photos, classes):
    photos = [p.read_bytes() for p in real_photos]

    def one(i):
        return server.invoke(photos[i % len(photos)], timeout=120)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(200)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 200, {s: statuses.count(s) for s in set(statuses)}
    for r in responses:
        assert r.json()["predicted_label"] in classes


def test_sigterm_stops_well_within_30_s(serve_image, trained_model_dir, real_photos):
    container = Container(serve_image, Path(trained_model_dir))
    try:
        container.wait_for_ping()
        assert container.invoke(real_photos[0].read_bytes()).status_code == 200
        took = container.stop(grace=30)
        state = container.state()
        assert took < 30, f"docker stop took {took:.1f} s"
        # 0 means our SIGTERM handling ran; 137 would mean docker had to SIGKILL.
        assert state["ExitCode"] == 0, (state, container.logs()[-3000:])
    finally:
        container.remove()


def test_sagemaker_port_and_worker_settings(serve_image, trained_model_dir, real_photos, classes):
    container = Container(
        serve_image, Path(trained_model_dir),
        {"SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
         "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30"},
        container_port=9090,
    )
    try:
        container.wait_for_ping()
        check_prediction(container.invoke(real_photos[0].read_bytes()), classes)
        assert "1 worker(s)" in container.logs()
    finally:
        container.remove()


def test_inference_py_and_requirements_from_the_model(serve_image, trained_model_dir, tmp_path, real_photos, classes):
    """code/inference.py's output_fn answers, using a package pip installed from code/requirements.txt."""
    model = model_with_code(Path(trained_model_dir), tmp_path / "model", {"inference.py": BREED_ONLY_INFERENCE}, link=False)
    write_breednote(model / "code")
    container = Container(serve_image, model)
    try:
        container.wait_for_ping()
        response = container.invoke(real_photos[0].read_bytes())
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"breed", "formatted_by"}, body
        assert body["breed"] in classes and body["formatted_by"] == "breednote 1.0"
        # The functions it leaves alone are still ours.
        refused = container.invoke(real_photos[0].read_bytes(), "text/csv")
        assert refused.status_code == 415 and "image/jpeg" in refused.json()["error"]
        assert "installed /opt/ml/model/code/requirements.txt" in container.logs()
    finally:
        container.remove()


def write_bad_model(kind: str, root: Path, good: Path) -> Path:
    model = root / kind
    if kind == "bad-requirements":
        return model_with_code(good, model, {"requirements.txt": "./not-here\n"}, link=False)
    if kind == "broken-inference":
        return model_with_code(good, model, {"inference.py": "import not_installed_anywhere\n"}, link=False)
    model.mkdir()
    if kind == "corrupt-onnx":
        (model / "model.json").write_text((good / "model.json").read_text())
        (model / "model.onnx").write_bytes(b"this is not an onnx file")
    elif kind == "corrupt-json":
        (model / "model.json").write_text('{"classes": [')
    # "missing": an empty directory, as when no model was mounted
    return model


@pytest.mark.parametrize("kind", ["missing", "corrupt-onnx", "corrupt-json", "bad-requirements", "broken-inference"])
def test_bad_model_is_unhealthy_without_a_crash_loop(serve_image, trained_model_dir, tmp_path, kind):
    model = write_bad_model(kind, tmp_path, Path(trained_model_dir))
    container = Container(serve_image, model)
    try:
        response = container.wait_for_ping(want=(503,), limit_s=60)
        assert response.json()["error"]
        if kind in ("bad-requirements", "broken-inference"):
            assert ("requirements.txt" if kind == "bad-requirements" else "not_installed_anywhere") in response.json()["error"]
        invocation = container.invoke(b"\xff\xd8", "image/jpeg")
        assert invocation.status_code == 503 and "model" in invocation.json()["error"]
        # Still up and quiet a few seconds later: not restarting anything.
        time.sleep(5)
        assert container.running()
        assert container.ping().status_code == 503
        logs = container.logs()
        assert logs.count("NOT SERVING") == 1, logs[-3000:]
        assert "model" in logs
        took = container.stop(grace=30)
        assert took < 30 and container.state()["ExitCode"] == 0
    finally:
        container.remove()
