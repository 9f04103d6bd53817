"""One serving container, run as SageMaker runs it (`docker run -p ... -v MODEL:/opt/ml/model IMAGE serve`),
for the serving image's tests: start it, wait for /ping, invoke it, read its logs and state, stop it."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port
from tests.docker.conftest import docker


# What SageMaker Serverless Inference allows a container (docs/serving.md, "Serverless"): a
# read-only root filesystem with only /tmp writable, a memory limit (1-6 GB), a CPU's worth;
# and what an endpoint there is asked to serve: one worker, at most 4 MB a request.
SERVERLESS_DOCKER_ARGS = ("--read-only", "--tmpfs", "/tmp", "--memory", "2g", "--cpus", "1")
SERVERLESS_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4"}


class Container:
    """One `docker run -d` of the serving image on a free loopback port; ``docker_args`` go before the image."""

    def __init__(self, image: str, model_dir: Path, env: dict[str, str] | None = None, container_port: int = 8080,
                 docker_args: tuple[str, ...] = (), mount_at: str = "/opt/ml/model"):
        self.name = f"dogbreed-serve-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:{container_port}",
                "-v", f"{model_dir}:{mount_at}:ro", *docker_args]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        docker(*args, image, "serve", timeout=120)

    def ping(self, timeout: float = 5) -> requests.Response | None:
        try:
            return requests.get(self.url + "/ping", timeout=timeout)
        except requests.RequestException:
            return None

    def wait_for_ping(self, want=(200,), limit_s: float = 180, every_s: float = 0.5) -> requests.Response:
        """Poll /ping every ``every_s`` until its status is in ``want``; fail with the logs after ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            response = self.ping()
            if response is not None and response.status_code in want:
                return response
            if not self.running():
                pytest.fail(f"container exited while starting:\n{self.logs()}")
            time.sleep(every_s)
        pytest.fail(f"/ping never answered {want} within {limit_s} s:\n{self.logs()[-5000:]}")

    def state(self) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.name).stdout)

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def logs(self, since: float | None = None) -> str:
        """stdout then stderr, the lines after ``since`` (a ``time.time()``) when given."""
        proc = docker("logs", *(["--since", f"{since:.3f}"] if since is not None else []), self.name, check=False)
        return proc.stdout + proc.stderr

    def invoke(self, body: bytes, content_type: str | None = "image/jpeg", headers=None, timeout: float = 60):
        headers = dict(headers or {})
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(self.url + "/invocations", data=body, headers=headers, timeout=timeout)

    def stop(self, grace: int = 30) -> float:
        """`docker stop` (SIGTERM, SIGKILL after ``grace``); returns the seconds it took."""
        start = time.monotonic()
        docker("stop", "-t", str(grace), self.name, timeout=grace + 30)
        return time.monotonic() - start

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False, timeout=60)


def start_to_first_answer(image: str, model_dir: Path, body: bytes, env: dict[str, str] | None = None,
                          docker_args: tuple[str, ...] = ()) -> tuple[Container, float, requests.Response]:
    """Start a container and invoke it with ``body`` once /ping says it is ready, as SageMaker does.

    Returns the running container, the seconds from `docker run` to that first answer (the
    cold start, /ping polled every 0.1 s) and the answer. The caller removes the container.
    """
    started = time.monotonic()
    container = Container(image, model_dir, env, docker_args=docker_args)
    try:
        container.wait_for_ping(every_s=0.1)
        response = container.invoke(body)
    except BaseException:
        container.remove()
        raise
    return container, time.monotonic() - started, response
