"""The multi-model-server entry point: ``handle(data, context)``.

MMS imports this module in every worker (``default_service_handler`` is
``dogbreed.serving.handler_service:handle``), calls ``handle(None, context)`` once to
load the model, then ``handle(batch, context)`` per request batch. A handler error is
answered by setting the status and content type on ``context`` for that request index
and returning the JSON body; MMS passes both through to the client. Raising instead
would make MMS answer 503 "Prediction failed" with its own body, so only unexpected
bugs reach that path (logged with a traceback, answered as a 500 JSON error here).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from dogbreed.serving import content_types
from dogbreed.serving.environment import ServingEnvironment
from dogbreed.serving.errors import ModelNotReadyError, ServingError, reason_phrase
from dogbreed.serving.predictor import Predictor

logger = logging.getLogger(__name__)

TOP_K_HEADER = "x-top-k"
# SageMaker forwards InvokeEndpoint's CustomAttributes in this header, e.g. "top_k=3".
CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
_TOP_K_ATTRIBUTE = re.compile(r"(?:^|[;,\s])top_k\s*=\s*([^;,\s]*)", re.IGNORECASE)


def request_headers(context: Any, idx: int) -> dict[str, str]:
    """The request's HTTP headers for batch index ``idx``, names lower-cased.

    MMS also stores each body part's metadata under the part's name as a dict; those
    entries are not headers and are skipped (but kept as a Content-Type fallback).
    """
    headers: dict[str, str] = {}
    parts: dict[str, str] = {}
    for name, value in (context.get_all_request_header(idx) or {}).items():
        if isinstance(value, dict):
            if value.get("content-type"):
                parts[str(name)] = str(value["content-type"])
        else:
            headers[str(name).lower()] = str(value)
    if "content-type" not in headers and parts.get("body"):
        headers["content-type"] = parts["body"]
    return headers


def requested_top_k(headers: dict[str, str]) -> str | None:
    """``top_k`` from ``X-Top-K`` or from SageMaker custom attributes; None for the default."""
    if headers.get(TOP_K_HEADER, "").strip():
        return headers[TOP_K_HEADER].strip()
    match = _TOP_K_ATTRIBUTE.search(headers.get(CUSTOM_ATTRIBUTES_HEADER, ""))
    return match.group(1) if match else None


def request_body(request: Any) -> bytes:
    """The raw body of one MMS request (``body`` part; ``data`` for form posts)."""
    if not request:
        return b""
    body = request.get("body")
    if body is None:
        body = request.get("data")
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


class HandlerService:
    """Holds one worker's :class:`Predictor` and answers MMS batches."""

    def __init__(self):
        self.predictor: Predictor | None = None

    def initialize(self, context: Any) -> None:
        """Load the model. Errors propagate: the ``serve`` entrypoint has already
        validated this model, so a failure here is transient and MMS's retry fits it."""
        env = ServingEnvironment.from_env()
        model_dir = (context.system_properties or {}).get("model_dir") or env.model_dir
        self.predictor = Predictor(
            model_dir,
            threads=env.ort_threads,
            max_payload_bytes=env.max_payload_bytes,
            max_image_pixels=env.max_image_pixels,
            default_top_k=env.top_k,
        )
        logger.info(
            "model loaded from %s: %s, %d classes, %d ORT thread(s)",
            model_dir, self.predictor.metadata.arch, len(self.predictor.classes), env.ort_threads,
        )

    def handle_one(self, request: Any, headers: dict[str, str]) -> tuple[int, str]:
        """One request -> (HTTP status, JSON body). Never raises."""
        try:
            if self.predictor is None:
                raise ModelNotReadyError("the model is not loaded yet; retry after GET /ping answers 200")
            result = self.predictor.predict(
                request_body(request), headers.get("content-type"), requested_top_k(headers)
            )
            return 200, json.dumps(result)
        except ServingError as exc:
            logger.info("request refused with %d: %s", exc.status, exc.message)
            return exc.status, exc.body()
        except Exception:  # noqa: BLE001 - a bug must not take the worker down
            logger.exception("unexpected error while predicting")
            return 500, json.dumps({"error": "internal error while predicting; see the endpoint's logs"})

    def handle(self, data: list | None, context: Any) -> list[str] | None:
        """MMS entry: ``data`` None means initialise; else one JSON body per request."""
        if data is None:
            self.initialize(context)
            return None
        responses = []
        for idx, request in enumerate(data):
            status, body = self.handle_one(request, request_headers(context, idx))
            context.set_response_content_type(idx, content_types.JSON)
            context.set_response_status(code=status, phrase=reason_phrase(status), idx=idx)
            responses.append(body)
        return responses


_service = HandlerService()


def handle(data: list | None, context: Any) -> list[str] | None:
    """The function MMS calls; see :meth:`HandlerService.handle`."""
    return _service.handle(data, context)
