"""/ping means ready, and Batch Transform's /execution-parameters, in the serving image.

A model whose ``model_fn`` pauses before loading (as a large model does) shows that
``/ping`` answers 503 JSON until every worker has loaded the model, and what it answers
when MMS restarts workers afterwards (see :mod:`dogbreed.serving.readiness`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.docker.conftest import docker
from tests.docker.serve_container import Container
from tests.unit.serving.model_code import model_with_code

pytestmark = pytest.mark.docker

LOAD_PAUSE_S = 12
SLOW_INFERENCE = f'''\
"""code/inference.py: the default model_fn, after a pause."""

import time

from dogbreed.serving.inference_handler import InferenceHandler


def model_fn(model_dir):
    time.sleep({LOAD_PAUSE_S})
    model = InferenceHandler().default_model_fn(model_dir)
    print("slow model_fn finished", flush=True)
    return model
'''
# A worker's output while it loads reaches the log through MMS's WorkerLifeCycle;
# `serve`'s own model check prints the same line without that prefix.
WORKER_LOADED = "WorkerLifeCycle - slow model_fn finished"

# The pids of MMS's Python workers: children of its backend server, same command line.
FIND_WORKERS = """
import os
workers = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        command = open(f"/proc/{pid}/cmdline", "rb").read()
        state, ppid = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[:2]
    except OSError:
        continue
    if b"model_service_worker" in command and state != "Z":
        workers[int(pid)] = int(ppid)
print(" ".join(str(pid) for pid, ppid in workers.items() if ppid in workers))
"""


def worker_pids(container: Container) -> list[int]:
    return [int(p) for p in docker("exec", container.name, "python", "-c", FIND_WORKERS).stdout.split()]


def kill(container: Container, pids: list[int]) -> None:
    docker("exec", container.name, "python", "-c", f"import os; [os.kill(p, 9) for p in {pids}]")


def pings_until(container: Container, want: int, limit_s: float) -> list[int]:
    """Poll /ping until it answers ``want``; every status seen, in order (None: no answer)."""
    seen = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        response = container.ping()
        seen.append(None if response is None else response.status_code)
        if response is not None:
            assert response.headers["Content-Type"] == "application/json", response.text
            body = response.json()
            assert body == {"status": "Healthy"} if response.status_code == 200 else "loading" in body["error"]
            if response.status_code == want:
                return seen
        if not container.running():
            pytest.fail(f"container exited:\n{container.logs()[-5000:]}")
        time.sleep(0.2)
    pytest.fail(f"/ping never answered {want} within {limit_s} s (saw {set(seen)}):\n{container.logs()[-5000:]}")


@pytest.fixture(scope="module")
def slow_model(trained_model_dir, tmp_path_factory) -> Path:
    return model_with_code(Path(trained_model_dir), tmp_path_factory.mktemp("slow") / "model",
                           {"inference.py": SLOW_INFERENCE}, link=False)


def test_ping_is_503_until_every_worker_has_loaded_then_follows_restarts(serve_image, slow_model, real_photos):
    container = Container(serve_image, slow_model, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    try:
        seen = pings_until(container, 200, limit_s=300)
        logs = container.logs()
        assert 503 in seen, seen
        # At the first 200 both workers have finished model_fn, not just one.
        assert logs.count(WORKER_LOADED) == 2, logs[-5000:]
        assert "ready: 2/2 workers loaded in" in logs
        # The first request is served by a loaded worker: it does not wait out a model_fn.
        response = container.invoke(real_photos[0].read_bytes(), timeout=LOAD_PAUSE_S - 2)
        assert response.status_code == 200, response.text

        # One worker dies: MMS restarts it, and /ping stays 200 meanwhile (one still serves).
        workers = worker_pids(container)
        assert len(workers) == 2, workers
        kill(container, workers[:1])
        deadline = time.monotonic() + 300
        while container.logs().count(WORKER_LOADED) < 3:
            assert container.ping().status_code == 200
            assert time.monotonic() < deadline, container.logs()[-5000:]
            time.sleep(0.3)
        assert container.invoke(real_photos[1].read_bytes(), timeout=60).status_code == 200
        logs = container.logs()
        assert "1/2 workers have the model loaded" in logs

        # Both die: 503 until a restarted worker has loaded the model again.
        kill(container, worker_pids(container))
        pings_until(container, 503, limit_s=30)
        pings_until(container, 200, limit_s=300)
        logs = container.logs()
        assert "no worker has the model loaded (0/2)" in logs
        assert logs.count(WORKER_LOADED) >= 4
        assert container.invoke(real_photos[2].read_bytes(), timeout=60).status_code == 200
    finally:
        container.remove()


def test_execution_parameters_follow_the_batch_environment(serve_image, trained_model_dir, real_photos):
    # What SageMaker's local mode passes for a transform job, plus the worker count.
    env = {"SAGEMAKER_BATCH": "True", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
           "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "1", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    container = Container(serve_image, Path(trained_model_dir), env)
    try:
        container.wait_for_ping()
        response = requests.get(container.url + "/execution-parameters", timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
        assert response.json() == {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 20}
        refused = requests.post(container.url + "/execution-parameters", data=b"", timeout=10)
        assert refused.status_code == 405 and "GET /execution-parameters" in refused.json()["error"]
        assert "batch transform: strategy SINGLE_RECORD" in container.logs()

        photo = real_photos[0].read_bytes()
        assert container.invoke(photo).status_code == 200
        # 15 MB is within the 20 MB limit: refused as no image, not for its size.
        padded = container.invoke(photo + b"\0" * (15 * 1024 * 1024), timeout=120)
        assert padded.status_code != 413, padded.text
        over = container.invoke(b"\0" * (21 * 1024 * 1024), timeout=120)
        assert over.status_code == 413 and "20 MiB" in over.json()["error"]
        # Past MMS's own limit (twice ours) nginx answers, in the same JSON shape.
        far_over = container.invoke(b"\0" * (41 * 1024 * 1024), timeout=120)
        assert far_over.status_code == 413 and "20 MiB" in far_over.json()["error"]
        assert container.invoke(photo).status_code == 200
    finally:
        container.remove()


def test_config_written_by_serve_passes_nginx_t(serve_image, trained_model_dir):
    """nginx itself accepts the configuration `serve` writes, as root and as another user."""
    script = ("import tempfile; from pathlib import Path; from dogbreed.serving import front; "
              "from dogbreed.serving.environment import ServingEnvironment; "
              "files = front.FrontFiles(Path(tempfile.mkdtemp())); "
              "print(front.write_config(ServingEnvironment.from_env(), files))")
    for user in ("root", "nobody"):
        proc = docker("run", "--rm", "--user", user, "--entrypoint", "sh", serve_image, "-c",
                      f'nginx -t -e stderr -c "$(python -c "{script}")"', check=False, timeout=120)
        assert proc.returncode == 0 and "syntax is ok" in proc.stderr, (user, proc.stdout, proc.stderr)
