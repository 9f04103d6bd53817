"""``/models`` on a multi-model endpoint: MMS's management API, with its failed loads undone.

SageMaker loads a model with ``POST /models`` ``{"model_name": ..., "url": ...}`` and, on
507, unloads another and posts again. MMS 1.1.11 answers a failed load (507 for lack of
memory, 500 when ``model_fn`` fails) but leaves the model registered with no worker: its
own clean-up runs on the failed worker's thread, is interrupted there, and puts the model
back. The retry would then get 409 and the model never load. So nginx passes ``/models``
to :class:`LoadRelay`, a small server on a Unix socket inside ``serve``: it forwards the
request to MMS unchanged (a body as JSON) and, after a failed load, unloads the model
itself before answering, so the answer SageMaker gets is MMS's and nothing stays behind.
"""

from __future__ import annotations

import http.client
import json
import logging
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger("dogbreed.serve")

# How long, after a failed load, MMS may take to put the model back (its clean-up fails
# within milliseconds), and how often to look.
UNDO_WINDOW_S = 2.0
UNDO_POLL_S = 0.1


class Management:
    """MMS's management API on a loopback port: one request per call."""

    def __init__(self, port: int, timeout_s: float):
        self.port = port
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str]:
        """``(status, body, content type)`` of MMS's answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), response.getheader("Content-Type") or "application/json"
        finally:
            connection.close()

    def undo_load(self, name: str) -> None:
        """Unload ``name`` once MMS has finished with its failed load; log what could not be done."""
        path = "/models/" + quote(name, safe="")
        deadline = time.monotonic() + UNDO_WINDOW_S
        while time.monotonic() < deadline:
            if self.request("GET", path)[0] == 200:
                status, body, _ = self.request("DELETE", path)
                if status == 200:
                    logger.info("unloaded %s after its failed load", name)
                    return
                logger.warning("could not unload %s after its failed load yet: %s %s", name, status, body[:200])
            time.sleep(UNDO_POLL_S)


def model_name(body: bytes) -> str | None:
    """``model_name`` of a load request's JSON body, or None."""
    try:
        name = json.loads(body).get("model_name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def relay_handler(management: Management) -> type[BaseHTTPRequestHandler]:
    """The request handler class of :class:`LoadRelay` for ``management``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            try:
                status, answer, content_type = management.request(self.command, self.path, body)
            except OSError as exc:
                status, content_type = 502, "application/json"
                answer = json.dumps({"error": f"the model server did not answer: {exc}"}).encode()
            name = model_name(body or b"")
            if self.command == "POST" and status >= 500 and name:
                logger.error("loading %s failed with %s: %s", name, status, answer[:300].decode("utf-8", "replace"))
                management.undo_load(name)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _relay

        def log_message(self, format, *args):
            logger.debug("load relay: " + format, *args)

    return Handler


class LoadRelay(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The ``/models`` server nginx passes to (see the module doc), on ``socket_path``."""

    daemon_threads = True

    def __init__(self, socket_path: Path, management: Management):
        socket_path.unlink(missing_ok=True)
        super().__init__(str(socket_path), relay_handler(management))
        # nginx's worker (www-data) connects to it.
        socket_path.chmod(0o666)

    def start(self) -> LoadRelay:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="load-relay")
        thread.daemon = True
        thread.start()
        return self
