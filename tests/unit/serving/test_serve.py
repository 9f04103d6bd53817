"""The `serve` entrypoint: MMS configuration, model check, requirements, and the 503 fallback server."""

import logging
import os
import re
import signal
import threading
import time
from http.server import ThreadingHTTPServer
from xml.etree import ElementTree

import pytest
import requests

from dogbreed.serving import serve, unhealthy
from dogbreed.serving.environment import ServingEnvironment
from dogbreed.serving.readiness import process_alive

from .model_code import model_with_code
from .signal_child import recording_child


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_mms_config_follows_the_environment():
    env = ServingEnvironment.from_env(
        {"SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
         "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"},
        cpus=2,
    )
    props = properties(serve.mms_config(env))
    # nginx owns port 9000; MMS's APIs are on loopback ports beside it.
    assert props["inference_address"] == f"http://127.0.0.1:{env.mms_port}"
    assert props["management_address"] == f"http://127.0.0.1:{env.management_port}"
    assert len({9000, env.mms_port, env.management_port}) == 3
    assert props["default_workers_per_model"] == "3"
    assert props["default_response_timeout"] == "90"
    assert props["default_service_handler"] == "dogbreed.serving.handler_service:handle"
    assert props["decode_input_request"] == "false"
    # MMS's limit is above ours, so the handler's JSON 413 answers first.
    assert int(props["max_request_size"]) > 2 * 1024 * 1024
    # A PNG overlay (Accept: image/png) of a detailed photo is over 1 MiB; SageMaker allows 6 MB.
    assert int(props["max_response_size"]) == 6 * 1024 * 1024


def test_mms_command_points_at_the_model():
    env = ServingEnvironment.from_env({}, cpus=2)
    command = serve.mms_command(env, "/tmp/c.properties", "/tmp/log4j2.xml")
    assert command[:3] == ["multi-model-server", "--start", "--foreground"]
    assert command[command.index("--model-store") + 1] == "/opt/ml"
    assert command[command.index("--models") + 1] == "model=model"
    assert command[command.index("--log-config") + 1] == "/tmp/log4j2.xml"


def logger_levels(xml: str) -> dict[str, str]:
    """Each logger's level in a log4j2.xml, the root one as ``Root``."""
    root = ElementTree.fromstring(xml)
    levels = {logger.get("name"): logger.get("level") for logger in root.iter("Logger")}
    levels["Root"] = root.find("Loggers/Root").get("level")
    return levels


@pytest.mark.parametrize(
    "level, mms, access, other",
    [("debug", "debug", "info", "warn"), ("", "info", "warn", "warn"),
     ("warning", "warn", "warn", "warn"), ("error", "error", "warn", "error")],
)
def test_mms_log_config_follows_the_log_level(level, mms, access, other):
    env = ServingEnvironment.from_env({"SAGEMAKER_CONTAINER_LOG_LEVEL": level}, cpus=2)
    levels = logger_levels(serve.mms_log_config(env))
    # MMS's own lines and the workers' follow the level; its access lines, logged at info, and each
    # request's "Backend response time" (info too) show only at debug.
    assert (levels["com.amazonaws.ml.mms"], levels["MODEL_LOG"]) == (mms, mms)
    assert levels["ACCESS_LOG"] == access
    worker_thread = ElementTree.fromstring(serve.mms_log_config(env)).find(
        "Loggers/Logger[@name='com.amazonaws.ml.mms.wlm.WorkerThread']"
    )
    assert worker_thread.get("level") == mms
    response_time = worker_thread.find("RegexFilter")
    assert re.fullmatch(response_time.get("regex"), "Backend response time: 37")
    assert response_time.get("onMatch") == ("NEUTRAL" if level == "debug" else "DENY")
    assert levels["Root"] == other
    assert levels["MMS_METRICS"] == levels["MODEL_METRICS"] == "off"


def test_the_default_mms_log_config_keeps_its_pattern():
    xml = serve.mms_log_config(ServingEnvironment.from_env({}, cpus=2))
    assert 'pattern="%d{ISO8601} [%-5p] %c{1} - %m%n"' in xml


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


@pytest.fixture
def fake_children(tmp_path, monkeypatch):
    """`run_server` with stand-ins for MMS and nginx (shell scripts), its signal handlers undone after."""
    pids = tmp_path / "pids"
    pids.mkdir()

    def script(name: str, body: str) -> list[str]:
        return ["sh", "-c", f"echo $$ > {pids / name}; {body}"]

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield script, pids
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def wait_for_file(path, limit_s=30):
    deadline = time.monotonic() + limit_s
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text().strip()


def test_when_nginx_exits_on_its_own_mms_is_stopped_and_serve_fails(fake_children, monkeypatch, tmp_path, caplog):
    script, pids = fake_children
    monkeypatch.setattr(serve, "mms_command", lambda env, config, log_config: script("mms", "exec sleep 120"))
    monkeypatch.setattr(serve.front, "nginx_command", lambda files: script("nginx", "sleep 1; exit 3"))
    code = serve.run_server(ServingEnvironment.from_env({"DOGBREED_MODEL_DIR": str(tmp_path)}, cpus=1))
    assert code == 3
    assert "nginx exited on its own with code 3" in caplog.text
    assert not process_alive(int(wait_for_file(pids / "mms")))


def test_sigterm_lets_nginx_finish_then_stops_both(fake_children, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO, "dogbreed.serve")
    script, pids = fake_children
    log = tmp_path / "signals"
    # Each writes its pid once its handler is set: the SIGTERM below finds both ready.
    monkeypatch.setattr(serve, "mms_command", lambda env, config, log_config: recording_child(
        log, signal.SIGTERM, "mms TERM", pids / "mms"))
    monkeypatch.setattr(serve.front, "nginx_command", lambda files: recording_child(
        log, signal.SIGQUIT, "nginx QUIT", pids / "nginx"))

    def terminate_when_up():
        wait_for_file(pids / "mms")
        wait_for_file(pids / "nginx")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_up, daemon=True).start()
    code = serve.run_server(ServingEnvironment.from_env({"DOGBREED_MODEL_DIR": str(tmp_path)}, cpus=1))
    assert code == 0 and "received SIGTERM" in caplog.text
    assert [line for line in log.read_text().splitlines() if line != "up"] == ["nginx QUIT", "mms TERM"]
    for name in ("mms", "nginx"):
        assert not process_alive(int((pids / name).read_text()))
