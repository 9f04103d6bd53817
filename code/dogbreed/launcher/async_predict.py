"""``predict --async``: an image through an asynchronous endpoint, by way of S3.

An asynchronous endpoint takes no body: the image is uploaded to S3 (by default to
``<the endpoint's S3OutputPath>/input/<inference id>/<file name>``, so one prefix holds all of
an endpoint's traffic), ``InvokeEndpointAsync`` queues it, and the endpoint writes its answer to
the ``OutputLocation`` it names, or its error answer to the ``FailureLocation``. :func:`invoke`
polls both until one appears and returns the answer as :func:`dogbreed.launcher.hosting.invoke`
returns a real-time one; an error answer, or none before the timeout, is an :class:`EndpointError`.
The uploaded image stays (an S3 lifecycle rule on the prefix expires old ones).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import ClientError

from dogbreed.launcher import hosting, validation
from dogbreed.launcher.hosting import EndpointError
from dogbreed.launcher.predictions import split_s3
from dogbreed.launcher.validation import LauncherError

INPUT_FOLDER = "input"
DEFAULT_TIMEOUT_S = 900  # InvokeEndpointAsync's default InvocationTimeoutSeconds
POLL_SECONDS = 2.0
ACCEPT = "application/json"
# What an uploaded file's name keeps: characters that need no escaping in an S3 URI.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_path(endpoint: str, sagemaker_client) -> str:
    """The endpoint's ``S3OutputPath``; :class:`LauncherError` when it is not an asynchronous endpoint."""
    config_name = sagemaker_client.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    config = sagemaker_client.describe_endpoint_config(EndpointConfigName=config_name)
    output_config = (config.get("AsyncInferenceConfig") or {}).get("OutputConfig") or {}
    if not output_config.get("S3OutputPath"):
        raise LauncherError(
            f"endpoint {endpoint} is not asynchronous (no AsyncInferenceConfig): predict without --async"
        )
    return output_config["S3OutputPath"].rstrip("/")


def invoke(
    endpoint: str,
    image: str,
    boto_session,
    input_prefix: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    custom_attributes: str | None = None,
    poll_seconds: float = POLL_SECONDS,
    echo: Callable[[str], None] = print,
) -> str:
    """Upload ``image`` under ``input_prefix`` (default: the endpoint's output path's ``input/``),
    queue it, wait for the answer; the answer's body, decoded as UTF-8 and untouched.

    ``echo`` gets one line once the request is queued: its inference id and where the answer lands.
    """
    validation.resource_name(endpoint, "endpoint name")
    body, content_type = hosting.read_image(image)
    prefix = input_prefix or f"{output_path(endpoint, boto_session.client('sagemaker'))}/{INPUT_FOLDER}"
    inference_id = uuid.uuid4().hex
    bucket, key_prefix = split_s3(prefix)
    name = _UNSAFE.sub("_", Path(image).name)
    key = f"{key_prefix}/{inference_id}/{name}".lstrip("/")
    s3 = boto_session.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    request = {
        "EndpointName": endpoint,
        "InputLocation": f"s3://{bucket}/{key}",
        "ContentType": content_type,
        "Accept": ACCEPT,
        "InferenceId": inference_id,
    }
    if custom_attributes is not None:
        request["CustomAttributes"] = custom_attributes
    response = boto_session.client("sagemaker-runtime").invoke_endpoint_async(**request)
    output, failure = response["OutputLocation"], response.get("FailureLocation")
    echo(f"inference {response.get('InferenceId', inference_id)} queued; its answer goes to {output}")
    return wait_for_answer(endpoint, s3, output, failure, timeout_s, poll_seconds)


def wait_for_answer(
    endpoint: str, s3, output: str, failure: str | None, timeout_s: float, poll_seconds: float = POLL_SECONDS
) -> str:
    """Poll ``output`` and ``failure`` until one exists: the answer, or :class:`EndpointError`."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = _read(s3, output)
        if answer is not None:
            return hosting.json_answer(endpoint, answer)
        error = _read(s3, failure) if failure else None
        if error is not None:
            raise EndpointError(hosting.error_answer(endpoint, None, error.decode("utf-8", "replace")))
        if time.monotonic() >= deadline:
            raise EndpointError(
                f"endpoint {endpoint}: no answer at {output} after {timeout_s:g} s "
                "(the request may still be queued or running; its answer lands there)"
            )
        time.sleep(poll_seconds)


def _read(s3, uri: str) -> bytes | None:
    """The object's bytes; None while it does not exist (``s3:ListBucket`` makes a missing key a 404)."""
    bucket, key = split_s3(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
