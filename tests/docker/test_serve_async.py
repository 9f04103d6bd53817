"""The serving image as `launcher deploy --async` configures it: the model-server timeout at
asynchronous inference's 60 minutes and a payload limit far above real-time's 6 MB
(dogbreed.launcher.container_settings' ASYNC_TIMEOUT_S and ASYNC_MAX_PAYLOAD_MB, the values the
launcher puts in the model's container environment). Uses the shared trained model.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from dogbreed.launcher.container_settings import (
    ASYNC_MAX_PAYLOAD_MB,
    ASYNC_TIMEOUT_S,
    DEFAULT_MAX_PAYLOAD_MB,
    MAX_PAYLOAD_ENV,
    TIMEOUT_ENV,
)
from tests.docker.conftest import docker
from tests.docker.serve_container import Container

pytestmark = pytest.mark.docker

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def async_container(serve_image, trained_model_dir):
    container = Container(serve_image, Path(trained_model_dir),
                          {TIMEOUT_ENV: str(ASYNC_TIMEOUT_S), MAX_PAYLOAD_ENV: str(ASYNC_MAX_PAYLOAD_MB)})
    try:
        container.wait_for_ping()
        yield container
    finally:
        container.remove()


def run_file(container: Container, name: str) -> str:
    """A file ``serve`` wrote for this run (in its /tmp/dogbreed-serve-* folder)."""
    return docker("exec", container.name, "sh", "-c", f"cat /tmp/dogbreed-serve-*/{name}").stdout


def test_the_timeout_and_the_payload_limit_are_asyncs(async_container):
    logs = async_container.logs()
    assert f"payload limit {ASYNC_MAX_PAYLOAD_MB * MIB} bytes" in logs, logs[-3000:]
    assert f"default_response_timeout={ASYNC_TIMEOUT_S}\n" in run_file(async_container, "config.properties")
    # nginx waits on MMS for twice the timeout: a request may queue behind one that uses all of it.
    assert re.search(rf"proxy_read_timeout {2 * ASYNC_TIMEOUT_S}s;", run_file(async_container, "nginx.conf"))


def test_a_photo_larger_than_real_times_limit_is_answered(async_container, real_photos, trained_model_dir):
    photo = Image.open(real_photos[0]).convert("RGB").resize((3000, 2400))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG", compress_level=0)  # about 21 MB: over 6 MB, under the async limit
    body = buffer.getvalue()
    assert DEFAULT_MAX_PAYLOAD_MB * MIB < len(body) < ASYNC_MAX_PAYLOAD_MB * MIB
    response = async_container.invoke(body, "image/png", timeout=300)
    assert response.status_code == 200, response.text
    classes = json.loads((Path(trained_model_dir) / "model.json").read_text())["classes"]
    assert response.json()["predicted_label"] in classes
