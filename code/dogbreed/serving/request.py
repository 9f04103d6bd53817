"""What one MMS request carries: its headers, its body and the ``top_k`` it asks for."""

from __future__ import annotations

import re
from typing import Any

TOP_K_HEADER = "x-top-k"
# SageMaker forwards InvokeEndpoint's CustomAttributes in this header, e.g. "top_k=3".
CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
_TOP_K_ATTRIBUTE = re.compile(r"(?:^|[;,\s])top_k\s*=\s*([^;,\s]*)", re.IGNORECASE)


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
