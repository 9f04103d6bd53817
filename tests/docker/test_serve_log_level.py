"""SAGEMAKER_CONTAINER_LOG_LEVEL in the serving image: at debug a line per start-up decision and per
request; at info (the default) the start-up lines and a line per bad request, none per answered one; at
warning none of them, however many requests come.

Uses the shared trained model (`trained_model_dir`; DOGBREED_TEST_MODEL_DIR reuses one).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.docker.serve_container import Container

pytestmark = pytest.mark.docker

REQUESTS = 4


@pytest.mark.parametrize("level", ["debug", "info", "warning"])
def test_the_log_level_decides_the_per_request_lines(serve_image, trained_model_dir, real_photos, level):
    container = Container(serve_image, Path(trained_model_dir),
                          {"SAGEMAKER_CONTAINER_LOG_LEVEL": level, "SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    try:
        container.wait_for_ping()
        # /ping answered 200 once the ready file was there; the line saying so follows within a poll.
        time.sleep(1.5)
        start_up = container.logs()
        since = time.time()
        # A bad body among the photos: MMS closes the connection after its 400 with a reset, which
        # nginx once logged as an error at every level ("readv() failed (104: ...)").
        bodies = [photo.read_bytes() for photo in real_photos[: REQUESTS - 1]] + [b"not an image"]
        statuses = [container.invoke(body).status_code for body in bodies]
        assert statuses == [200] * (REQUESTS - 1) + [400]
        time.sleep(2)  # MMS logs asynchronously
        requests_log = container.logs(since=since)
    finally:
        container.remove()
    # One line per start-up decision at debug and info; none at warning.
    assert ("ready: 1/1 workers loaded" in start_up) == (level != "warning"), start_up[-3000:]
    assert "readv() failed" not in requests_log, requests_log
    assert requests_log.count("Backend response time") == (REQUESTS if level == "debug" else 0), requests_log
    if level == "warning":
        assert requests_log.strip() == "", requests_log
    else:
        assert "request answered 400" in requests_log, requests_log
