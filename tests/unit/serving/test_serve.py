"""The `serve` entrypoint: MMS configuration, model check, requirements, and the 503 fallback server."""

import threading
from http.server import ThreadingHTTPServer

import pytest
import requests

from dogbreed.serving import serve, unhealthy
from dogbreed.serving.environment import ServingEnvironment

from .model_code import model_with_code


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_mms_config_follows_the_environment():
    env = ServingEnvironment.from_env(
        {"SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
         "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"},
        cpus=2,
    )
    props = properties(serve.mms_config(env))
    assert props["inference_address"] == "http://0.0.0.0:9000"
    assert props["management_address"].startswith("http://127.0.0.1:")
    assert props["default_workers_per_model"] == "3"
    assert props["default_response_timeout"] == "90"
    assert props["default_service_handler"] == "dogbreed.serving.handler_service:handle"
    assert props["decode_input_request"] == "false"
    # MMS's limit is above ours, so the handler's JSON 413 answers first.
    assert int(props["max_request_size"]) > 2 * 1024 * 1024


def test_mms_command_points_at_the_model():
    env = ServingEnvironment.from_env({}, cpus=2)
    command = serve.mms_command(env, "/tmp/c.properties")
    assert command[:3] == ["multi-model-server", "--start", "--foreground"]
    assert command[command.index("--model-store") + 1] == "/opt/ml"
    assert command[command.index("--models") + 1] == "model=model"
    assert serve.LOG_CONFIG.is_file()


def test_check_model(model_dir, tmp_path):
    good = ServingEnvironment.from_env({"DOGBREED_MODEL_DIR": str(model_dir)}, cpus=1)
    assert serve.check_model(good) is None
    bad = ServingEnvironment.from_env({"DOGBREED_MODEL_DIR": str(tmp_path)}, cpus=1)
    assert "model.json is missing" in serve.check_model(bad)


@pytest.mark.parametrize(
    "inference_py, reason",
    [("def model_fn(model_dir):\n    return 42\n", None), ("import not_installed_anywhere\n", "not_installed_anywhere")],
)
def test_check_model_runs_the_users_code(model_dir, tmp_path, inference_py, reason):
    model = model_with_code(model_dir, tmp_path / "model", {"inference.py": inference_py})
    found = serve.check_model(ServingEnvironment.from_env({"DOGBREED_MODEL_DIR": str(model)}, cpus=1))
    assert found is None if reason is None else reason in found


def test_check_flag_exit_codes(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DOGBREED_MODEL_DIR", str(model_dir))
    assert serve.main(["--check"]) == 0
    monkeypatch.setenv("DOGBREED_MODEL_DIR", str(tmp_path))
    assert serve.main(["--check"]) == 1


def test_a_failing_requirements_install_is_the_reason_not_a_skip(model_dir, tmp_path, monkeypatch):
    # pip fails on the missing path before it installs anything.
    model = model_with_code(model_dir, tmp_path / "model", {"requirements.txt": "./not-here\n"})
    env = ServingEnvironment.from_env({"DOGBREED_MODEL_DIR": str(model)}, cpus=1)
    reason = serve.prepare(env)
    assert "requirements.txt failed" in reason and "not-here" in reason
    monkeypatch.setenv("DOGBREED_MODEL_DIR", str(model))
    assert serve.main(["--check"]) == 1


@pytest.fixture
def unhealthy_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), unhealthy.unhealthy_handler("model.json is missing", 1024))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unhealthy_server_answers_503_json(unhealthy_url):
    for response in (
        requests.get(unhealthy_url + "/ping", timeout=5),
        requests.post(unhealthy_url + "/invocations", data=b"x" * 100, headers={"Content-Type": "image/jpeg"}, timeout=5),
    ):
        assert response.status_code == 503
        assert response.headers["Content-Type"] == "application/json"
        assert "model.json is missing" in response.json()["error"]
    unknown = requests.get(unhealthy_url + "/other", timeout=5)
    assert unknown.status_code == 404 and "/ping" in unknown.json()["error"]
