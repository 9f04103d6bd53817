"""The serving image under SageMaker Serverless Inference's limits: a read-only root filesystem
with only /tmp writable, 2 GB of memory, one CPU, one worker and a 4 MB payload limit.

`docker run --read-only --tmpfs /tmp --memory 2g --cpus 1` (serve_container.SERVERLESS_DOCKER_ARGS).
The cold start (from `docker run` to the first answered photo) is printed, not asserted:
`bench/serverless` measures it against an unlimited start. Uses the shared trained model
(`trained_model_dir`; DOGBREED_TEST_MODEL_DIR reuses one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.docker.conftest import docker
from tests.docker.serve_container import SERVERLESS_DOCKER_ARGS, SERVERLESS_ENV, Container, start_to_first_answer
from tests.unit.serving.model_code import model_with_code

pytestmark = pytest.mark.docker

MIB = 1024 * 1024
# What a server writing outside /tmp on a read-only root would log.
WRITE_FAILURES = re.compile(r"read-only file system|permission denied|failed to persist|errno 30", re.I)


@pytest.fixture(scope="module")
def serverless(serve_image, trained_model_dir, real_photos):
    """A container under the serverless limits, and its first answer (to the first real photo)."""
    container, seconds, first = start_to_first_answer(
        serve_image, Path(trained_model_dir), real_photos[0].read_bytes(), SERVERLESS_ENV, SERVERLESS_DOCKER_ARGS)
    print(f"serverless cold start (docker run -> first answered photo, {' '.join(SERVERLESS_DOCKER_ARGS)}): "
          f"{seconds:.1f} s")
    try:
        yield container, first
    finally:
        container.remove()


def test_the_limits_are_the_ones_asked_for(serverless):
    container, _ = serverless
    host = json.loads(docker("inspect", "-f", "{{json .HostConfig}}", container.name).stdout)
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["Memory"] == 2 * 1024 * MIB and host["NanoCpus"] == 10**9


def test_a_photo_is_answered_by_one_worker_without_writing_outside_tmp(serverless, trained_model_dir):
    container, first = serverless
    classes = json.loads((Path(trained_model_dir) / "model.json").read_text())["classes"]
    assert first.status_code == 200, first.text
    assert first.json()["predicted_label"] in classes
    logs = container.logs()
    assert re.search(r"serving on port 8080: 1 worker\(s\) x \d+ ORT thread\(s\) on \d+ CPU\(s\), "
                     rf"payload limit {4 * MIB} bytes", logs), logs[-3000:]
    assert "ready: 1/1 workers loaded" in logs
    assert not WRITE_FAILURES.findall(logs), logs[-3000:]
    assert container.running()


def test_a_body_over_4_mb_is_refused_with_json_413(serverless):
    container, _ = serverless
    response = container.invoke(b"\xff" * (4 * MIB + 1))
    assert response.status_code == 413, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert "over the limit of 4194304 bytes" in response.json()["error"]
    # Exactly 4 MB is within the limit: refused as a corrupt image (400), not as too large.
    assert container.invoke(b"\xff" * (4 * MIB)).status_code == 400


def test_code_requirements_on_a_read_only_root_say_why_in_one_line(serve_image, trained_model_dir, tmp_path):
    # pip cannot install into the image's /opt/venv there: /ping and /invocations say so (503),
    # before pip runs, so the package need not exist.
    model = model_with_code(Path(trained_model_dir), tmp_path / "model", {"requirements.txt": "breednote\n"},
                            link=False)
    container = Container(serve_image, model, SERVERLESS_ENV, docker_args=SERVERLESS_DOCKER_ARGS)
    try:
        response = container.wait_for_ping(want=(503,))
        error = response.json()["error"]
        assert "requirements.txt: /opt/venv is on a read-only filesystem" in error, error
        assert "\n" not in error
    finally:
        container.remove()
