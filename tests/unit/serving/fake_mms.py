"""Stand-ins for multi-model-server's ``Context`` and ``RequestProcessor`` (mms 1.1.11).

The same methods and attributes as MMS's (``mms/context.py``), so the handler service
sees what a worker gives it; the responses are recorded for the tests to read.
"""

from __future__ import annotations

import json


class RequestProcessor:
    """One request's headers in, its status and response headers out."""

    def __init__(self, request_header: dict):
        self._request_header = request_header
        self.status_code = 200
        self.reason_phrase = None
        self.response_headers: dict[str, str] = {}

    def get_request_property(self, key):
        return self._request_header.get(key)

    def get_request_properties(self):
        return self._request_header

    def report_status(self, code, reason_phrase=None):
        self.status_code, self.reason_phrase = code, reason_phrase

    def add_response_property(self, key, value):
        self.response_headers[key] = value


class Context:
    """MMS's per-worker context, holding the current batch's request processors."""

    def __init__(self, model_dir, headers_per_request=()):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 1}
        self.request_processor = [RequestProcessor(h) for h in headers_per_request]
        self.request_ids = {i: f"request-{i}" for i in range(len(self.request_processor))}

    def get_request_header(self, idx, key):
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx):
        return self.request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx, value):
        self.request_processor[idx].add_response_property("content-type", value)

    def get_response_content_type(self, idx):
        return self.request_processor[idx].response_headers.get("content-type")

    def set_response_status(self, code=200, phrase="", idx=0):
        self.request_processor[idx].report_status(code, reason_phrase=phrase)

    def get_response_status(self, idx):
        return self.request_processor[idx].status_code, self.request_processor[idx].reason_phrase


def mms_headers(headers: dict) -> dict:
    """What MMS stores for a request: its headers plus the ``body`` part's metadata."""
    return dict(headers, body={"content-type": headers.get("Content-Type", "")})


def call(handle, model_dir, requests) -> list[tuple[int, str | None, object]]:
    """Send one batch through ``handle``: [(headers, body)] -> [(status, content type, body)].

    A JSON answer comes back parsed; anything else as returned.
    """
    context = Context(model_dir, [mms_headers(h) for h, _ in requests])
    bodies = handle([{"body": body} for _, body in requests], context)
    assert isinstance(bodies, list) and len(bodies) == len(requests)
    answers = []
    for idx, body in enumerate(bodies):
        content_type = context.get_response_content_type(idx)
        if content_type == "application/json":
            body = json.loads(body)
        answers.append((context.get_response_status(idx)[0], content_type, body))
    return answers
