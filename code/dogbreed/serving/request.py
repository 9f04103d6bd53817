"""What one MMS request carries: its headers, its body, the ``top_k`` and the map it asks for."""

from __future__ import annotations

import re
from typing import Any

from sagemaker_inference.content_types import ANY

from dogbreed.explain import CAM, NO_MAP
from dogbreed.explain import CHOICES as EXPLAIN_CHOICES
from dogbreed.serving.content_types import PNG
from dogbreed.serving.errors import BadRequestError

TOP_K_HEADER = "x-top-k"
EXPLAIN_HEADER = "x-explain"
# SageMaker forwards InvokeEndpoint's CustomAttributes in this header, e.g. "top_k=3;explain=cam".
CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
_TOP_K_ATTRIBUTE = re.compile(r"(?:^|[;,\s])top_k\s*=\s*([^;,\s]*)", re.IGNORECASE)
_EXPLAIN_ATTRIBUTE = re.compile(r"(?:^|[;,\s])explain\s*=\s*([^;,\s]*)", re.IGNORECASE)


def request_headers(context: Any, idx: int = 0) -> dict[str, str]:
    """The HTTP headers of request ``idx`` of MMS's ``context``, names lower-cased.

    MMS also stores each body part's metadata under the part's name as a dict; those
    entries are not headers and are skipped (the ``body`` part's type is kept as a
    Content-Type fallback). None or a context without requests gives no headers.
    """
    processors = getattr(context, "request_processor", None) or []
    if idx >= len(processors):
        return {}
    headers: dict[str, str] = {}
    parts: dict[str, str] = {}
    for name, value in (processors[idx].get_request_properties() or {}).items():
        if isinstance(value, dict):
            if value.get("content-type"):
                parts[str(name)] = str(value["content-type"])
        else:
            headers[str(name).lower()] = str(value)
    if "content-type" not in headers and parts.get("body"):
        headers["content-type"] = parts["body"]
    return headers


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


def requested_top_k(headers: dict[str, str]) -> str | None:
    """``top_k`` from ``X-Top-K`` or from SageMaker custom attributes; None for the default."""
    if headers.get(TOP_K_HEADER, "").strip():
        return headers[TOP_K_HEADER].strip()
    match = _TOP_K_ATTRIBUTE.search(headers.get(CUSTOM_ATTRIBUTES_HEADER, ""))
    return match.group(1) if match else None


def requested_explain(headers: dict[str, str]) -> str | None:
    """``cam`` or ``none`` from ``X-Explain`` or custom attribute ``explain=`` (case-insensitive); None if neither.

    Raises :class:`BadRequestError` (400) naming the allowed values for anything else.
    """
    if headers.get(EXPLAIN_HEADER, "").strip():
        raw, source = headers[EXPLAIN_HEADER].strip(), "X-Explain: "
    else:
        match = _EXPLAIN_ATTRIBUTE.search(headers.get(CUSTOM_ATTRIBUTES_HEADER, ""))
        if match is None:
            return None
        raw, source = match.group(1), "custom attribute explain="
        if not raw:
            return None  # "explain=" says nothing, as "top_k=" does
    value = raw.lower()
    if value not in EXPLAIN_CHOICES:
        raise BadRequestError(
            f"{source}{raw!r} is not one of {', '.join(EXPLAIN_CHOICES)} (cam: a class activation map of the top class)"
        )
    return value


def accept_of(headers: dict[str, str], default_accept: str) -> str:
    """The request's Accept header; ``default_accept`` when it has none or ``*/*``, as the toolkit does."""
    accept = headers.get("accept", "")
    return default_accept if not accept or accept == ANY else accept


def explain_method(requested: str | None, answer: str | None, default: str) -> str | None:
    """The map one request gets: ``"cam"``, or None for none.

    ``requested`` is :func:`requested_explain`'s, ``answer`` the media type the client
    prefers (``content_types.preferred_answer``) and ``default`` ``DOGBREED_EXPLAIN``. A PNG
    answer is the picture with the map overlaid, so it always gets one; with an explicit
    ``none`` that is a contradiction, a 400.
    """
    if answer == PNG:
        if requested == NO_MAP:
            raise BadRequestError(
                "Accept: image/png answers the picture with its class activation map overlaid, "
                "which X-Explain: none (or explain=none) refuses; drop one of the two"
            )
        return CAM
    method = requested or default
    return None if method == NO_MAP else method
