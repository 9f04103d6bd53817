"""SAGEMAKER_CONTAINER_LOG_LEVEL in the serving image: at info (the default) a line per start-up
decision and per request; at warning neither, however many requests come.

Uses the shared trained model (`trained_model_dir`; DOGBREED_TEST_MODEL_DIR reuses one).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.docker.serve_container import Container

pytestmark = pytest.mark.docker

REQUESTS = 4


@pytest.mark.parametrize("level, per_request_lines", [("info", True), ("warning", False)])
def test_the_log_level_decides_the_per_request_lines(serve_image, trained_model_dir, real_photos, level,
                                                      per_request_lines):
    container = Container(serve_image, Path(trained_model_dir),
                          {"SAGEMAKER_CONTAINER_LOG_LEVEL": level, "SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    try:
        container.wait_for_ping()
        # /ping answered 200 once the ready file was there; the line saying so follows within a poll.
        time.sleep(1.5)
        start_up = container.logs()
        since = time.time()
        # Photos only: MMS closes the connection after a 4xx answer with a reset that nginx logs as
        # an error ("readv() failed (104: Connection reset by peer) while reading upstream"), at
        # every level; the client's answer is whole.
        statuses = [container.invoke(photo.read_bytes()).status_code for photo in real_photos[:REQUESTS]]
        assert statuses == [200] * REQUESTS
        time.sleep(2)  # MMS logs asynchronously
        requests_log = container.logs(since=since)
    finally:
        container.remove()
    # One line per start-up decision at info; none at warning.
    assert ("ready: 1/1 workers loaded" in start_up) == per_request_lines, start_up[-3000:]
    if per_request_lines:
        assert requests_log.count("Backend response time") == REQUESTS, requests_log
    else:
        assert requests_log.strip() == "", requests_log
