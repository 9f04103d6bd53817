"""The server that stands in for MMS when the model cannot be served.

A stdlib HTTP server answering ``/ping`` and ``/invocations`` with 503
``{"error": reason}``: the reason is visible to whoever calls the endpoint and logged
once, with no restart loop (MMS would restart a failing worker forever while ``/ping``
says nothing useful).
"""

from __future__ import annotations

import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dogbreed.serving.errors import error_body

logger = logging.getLogger("dogbreed.serve")


def unhealthy_handler(reason: str, max_body_bytes: int):
    """A request handler class answering 503 ``{"error": reason}`` on /ping and /invocations."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "dogbreed-unhealthy"
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, message: str) -> None:
            body = error_body(message).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _drain(self) -> None:
            # Read the body so the client sees our answer rather than a reset.
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body_bytes:
                self.close_connection = True
                return
            while length > 0:
                chunk = self.rfile.read(min(length, 65536))
                if not chunk:
                    break
                length -= len(chunk)

        def _route(self) -> None:
            self._drain()
            path = self.path.split("?", 1)[0]
            if path == "/ping":
                self._answer(503, f"the model could not be loaded: {reason}")
            elif path == "/invocations":
                self._answer(503, f"no predictions: the model could not be loaded: {reason}")
            else:
                self._answer(404, f"unknown path {path}; this endpoint serves GET /ping and POST /invocations")

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _route

        def log_message(self, format, *args):
            logger.debug("%s - %s", self.address_string(), format % args)

    return Handler


def run_unhealthy(port: int, reason: str, max_body_bytes: int = 64 * 1024 * 1024) -> int:
    """Serve 503s with ``reason`` on ``port`` until SIGTERM/SIGINT; returns 0."""
    server = ThreadingHTTPServer(("0.0.0.0", port), unhealthy_handler(reason, max_body_bytes))
    server.daemon_threads = True

    def stop(signum, _frame):
        logger.info("received %s: stopping", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.error("NOT SERVING: %s", reason)
    logger.error("answering /ping and /invocations with 503 on port %d until stopped", port)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0
