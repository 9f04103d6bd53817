"""Multi-model endpoints: the settings, nginx's routes, MMS's start, the memory check and the load relay."""

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dogbreed.artifacts import ModelLoadError
from dogbreed.serving import front, memory, multi_model, serve
from dogbreed.serving.environment import ConfigurationError, ServingEnvironment
from dogbreed.serving.handler_service import check_loadable

from .model_code import model_with_code


def environment(**variables) -> ServingEnvironment:
    return ServingEnvironment.from_env({"SAGEMAKER_MULTI_MODEL": "true", **variables}, cpus=2)


def location(config: str, head: str) -> str:
    block = config[config.index(f"location {head} {{"):]
    return block[: block.index("\n        }")]


def test_the_variable_is_true_or_false():
    assert environment().multi_model
    assert not ServingEnvironment.from_env({}, cpus=2).multi_model
    with pytest.raises(ConfigurationError, match="SAGEMAKER_MULTI_MODEL"):
        ServingEnvironment.from_env({"SAGEMAKER_MULTI_MODEL": "yes"}, cpus=2)


def test_nginx_routes_the_contract_to_mms(tmp_path):
    files = front.FrontFiles(tmp_path)
    env = environment()
    config = front.nginx_config(env, files)
    assert "proxy_pass http://load_relay;" in location(config, "= /models")
    assert f"server unix:{files.relay_socket};" in config
    assert "^(GET|POST)$" in location(config, "= /models")
    one = location(config, "~ ^/models/[^/]+$")
    assert "proxy_pass http://mms_management;" in one and "^(GET|DELETE)$" in one
    assert f"server 127.0.0.1:{env.management_port};" in config
    invoke = location(config, "~ ^/models/[^/]+/invoke$")
    assert "proxy_pass http://mms;" in invoke and "!= POST" in invoke
    assert f"proxy_read_timeout {front.proxy_timeout_s(env)}s;" in invoke
    # /ping is MMS's own: healthy with no model loaded, no ready file.
    assert "proxy_pass http://mms;" in location(config, "= /ping")
    assert str(files.ready_file) not in config
    assert "location = /invocations" not in config and "location = /execution-parameters" not in config
    assert "/models/<name>/invoke" in front.error_messages(env)[404]


def test_single_model_config_has_no_multi_model_route(tmp_path):
    config = front.nginx_config(ServingEnvironment.from_env({}, cpus=2), front.FrontFiles(tmp_path))
    assert "location = /models" not in config and "invoke" not in config
    assert "mms_management" not in config and "load_relay" not in config


def test_mms_starts_with_no_model_and_the_root_as_store():
    env = environment()
    command = serve.mms_command(env, "/tmp/c.properties", "/tmp/log4j2.xml")
    assert "--models" not in command
    assert command[command.index("--model-store") + 1] == "/"
    assert "model_store=/\n" in serve.mms_config(env)


def test_memory_needed_is_a_multiple_of_the_largest_onnx_file(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "model.int8.onnx").write_bytes(b"x" * 300)
    assert memory.memory_needed_bytes(tmp_path) == memory.LOAD_FACTOR * 1000
    memory.ensure_memory_for(tmp_path, available=memory.LOAD_FACTOR * 1000)
    with pytest.raises(MemoryError, match="needs about"):
        memory.ensure_memory_for(tmp_path, available=memory.LOAD_FACTOR * 1000 - 1)


def test_available_memory_reads_cgroups_and_meminfo(tmp_path):
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir()
    v1.mkdir()
    (v2 / "memory.max").write_text("max\n")
    (v2 / "memory.current").write_text("100\n")
    (v1 / "memory.limit_in_bytes").write_text("1000\n")
    (v1 / "memory.usage_in_bytes").write_text("400\n")
    # v2 without a limit falls to v1's.
    assert memory.cgroup_available_bytes(v2, v1) == 600
    (v2 / "memory.max").write_text("500\n")
    assert memory.cgroup_available_bytes(v2, v1) == 400
    assert memory.cgroup_available_bytes(tmp_path / "none", tmp_path / "none") is None
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  2048 kB\nMemAvailable:    1024 kB\n")
    assert memory.meminfo_available_bytes(meminfo) == 1024 * 1024
    assert memory.meminfo_available_bytes(tmp_path / "missing") is None


def test_a_model_with_requirements_cannot_load_on_a_multi_model_endpoint(model_dir, tmp_path):
    check_loadable(str(model_dir))
    model = model_with_code(model_dir, tmp_path / "model", {"requirements.txt": "numpy\n"})
    with pytest.raises(ModelLoadError, match="cannot install a model's requirements"):
        check_loadable(str(model))


class FakeManagement(BaseHTTPRequestHandler):
    """MMS's management API as MMS 1.1.11 has it after a failed load: the model stays registered."""

    protocol_version = "HTTP/1.1"
    registered: set[str] = set()
    calls: list[tuple[str, str, str]] = []
    load_status = 507

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.calls.append(("POST", self.path, self.headers["Content-Type"]))
        name = json.loads(body)["model_name"]
        if name in self.registered:
            return self._answer(409, {"code": 409, "message": "already registered"})
        self.registered.add(name)
        status = self.load_status
        return self._answer(status, {"code": status, "message": "Failed to start workers" if status > 200 else "ok"})

    def do_GET(self):
        self.calls.append(("GET", self.path, ""))
        name = self.path.rsplit("/", 1)[-1]
        if self.path == "/models":
            return self._answer(200, {"models": sorted(self.registered)})
        return self._answer(200 if name in self.registered else 404, {"modelName": name})

    def do_DELETE(self):
        self.calls.append(("DELETE", self.path, ""))
        name = self.path.rsplit("/", 1)[-1]
        found = name in self.registered
        self.registered.discard(name)
        return self._answer(200 if found else 404, {})

    def log_message(self, format, *args):
        pass


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket, as nginx reaches the relay."""

    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = str(path)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


@pytest.fixture
def relay_socket(tmp_path):
    FakeManagement.registered, FakeManagement.calls, FakeManagement.load_status = set(), [], 507
    mms = ThreadingHTTPServer(("127.0.0.1", 0), FakeManagement)
    threading.Thread(target=mms.serve_forever, daemon=True).start()
    path = tmp_path / "models.sock"
    server = multi_model.LoadRelay(path, multi_model.Management(mms.server_address[1], 10)).start()
    try:
        yield path
    finally:
        server.shutdown()
        mms.shutdown()


def relayed(path, method: str, target: str, body: bytes | None = None) -> tuple[int, dict]:
    connection = UnixConnection(path)
    connection.request(method, target, body=body)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_a_failed_load_is_answered_as_mms_did_and_undone(relay_socket):
    body = json.dumps({"model_name": "a.tar.gz", "url": "/opt/ml/models/a/model"}).encode()
    for _ in range(2):  # SageMaker's retry after a 507 gets 507 again, not 409
        status, answer = relayed(relay_socket, "POST", "/models", body)
        assert (status, answer["message"]) == (507, "Failed to start workers")
        assert FakeManagement.registered == set()
    # Forwarded as JSON whatever the request said, and unloaded by name.
    assert ("POST", "/models", "application/json") in FakeManagement.calls
    assert ("DELETE", "/models/a.tar.gz", "") in FakeManagement.calls


def test_a_good_load_and_a_double_load_are_left_alone(relay_socket):
    FakeManagement.load_status = 200
    body = json.dumps({"model_name": "b", "url": "/opt/ml/models/b/model"}).encode()
    assert relayed(relay_socket, "POST", "/models", body)[0] == 200
    assert relayed(relay_socket, "POST", "/models", body)[0] == 409
    assert FakeManagement.registered == {"b"}
    assert not [call for call in FakeManagement.calls if call[0] == "DELETE"]
    assert relayed(relay_socket, "GET", "/models") == (200, {"models": ["b"]})


def test_model_name_of_a_load_request():
    assert multi_model.model_name(b'{"model_name": "x", "url": "/m"}') == "x"
    for body in (b"", b"[]", b'{"model_name": 3}', b"not json"):
        assert multi_model.model_name(body) is None
