"""The container's ``serve`` program: check the model, then run multi-model-server.

SageMaker starts the container as ``docker run IMAGE serve``. This process:

1. reads every setting once (:class:`ServingEnvironment`);
2. loads the model exactly as a worker will (:class:`Predictor`). If that fails, the
   reason is logged and a small stdlib HTTP server answers ``/ping`` and
   ``/invocations`` with 503 ``{"error": reason}`` instead. MMS would otherwise restart
   the failing worker forever while ``/ping`` says nothing useful;
3. otherwise writes MMS's config, starts MMS in its own process group and, on SIGTERM
   or SIGINT, stops that whole group (frontend, launcher, workers), escalating to
   SIGKILL after a grace period well inside SageMaker's 30 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dogbreed.serving.environment import ConfigurationError, ServingEnvironment, port_from_env

logger = logging.getLogger("dogbreed.serve")

HANDLER = "dogbreed.serving.handler_service:handle"
MODEL_NAME = "model"
LOG_CONFIG = Path(__file__).with_name("log4j2.xml")
# SIGTERM -> SIGKILL escalation; SageMaker and `docker stop` allow 30 s / 10 s.
STOP_GRACE_S = 8.0


def check_model(env: ServingEnvironment) -> str | None:
    """Load the model once as a worker would; None when fine, else the reason."""
    from dogbreed.artifacts import ModelLoadError
    from dogbreed.serving.predictor import Predictor

    try:
        predictor = Predictor(env.model_dir, threads=env.ort_threads)
    except ModelLoadError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure means the workers would fail too
        return f"loading the model from {env.model_dir} failed: {exc!r}"
    logger.info("model OK: %s, %d classes: %s", predictor.metadata.arch, len(predictor.classes),
                ", ".join(predictor.classes[:5]) + (" ..." if len(predictor.classes) > 5 else ""))
    del predictor
    gc.collect()
    return None


def mms_config(env: ServingEnvironment) -> str:
    """The MMS ``config.properties`` text for ``env``."""
    properties = {
        "inference_address": f"http://0.0.0.0:{env.port}",
        "management_address": f"http://127.0.0.1:{env.management_port}",
        "model_store": str(Path(env.model_dir).parent),
        "default_service_handler": HANDLER,
        "default_workers_per_model": env.workers,
        "default_response_timeout": env.timeout_s,
        "unregister_model_timeout": env.timeout_s,
        "max_request_size": env.mms_max_request_size,
        "max_response_size": 1024 * 1024,
        # Bodies reach the handler as raw bytes, whatever the Content-Type says.
        "decode_input_request": "false",
        # Settings come from this file only, not from MMS_* variables.
        "enable_envvars_config": "false",
        "preload_model": "false",
        "async_logging": "true",
        "vmargs": env.vmargs,
    }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def mms_command(env: ServingEnvironment, config_path: str) -> list[str]:
    """The multi-model-server command line (foreground, so we can wait on it)."""
    return [
        "multi-model-server", "--start", "--foreground",
        "--mms-config", config_path,
        "--log-config", str(LOG_CONFIG),
        "--model-store", str(Path(env.model_dir).parent),
        # MMS resolves the model's location relative to the model store.
        "--models", f"{MODEL_NAME}={Path(env.model_dir).name}",
    ]


def run_mms(env: ServingEnvironment) -> int:
    """Start MMS, forward SIGTERM/SIGINT to its process group, return its exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="dogbreed-mms-"))
    config_path = workdir / "config.properties"
    config_path.write_text(mms_config(env))
    # MMS refuses to start if its pid file names a live process; after a container
    # restart the stale file can name an unrelated pid (even ours).
    Path(tempfile.gettempdir(), ".model_server.pid").unlink(missing_ok=True)
    command = mms_command(env, str(config_path))
    logger.info("starting MMS: %d worker(s) x %d ORT thread(s) on %d CPU(s), port %d, payload limit %d bytes",
                env.workers, env.ort_threads, env.cpus, env.port, env.max_payload_bytes)
    logger.info("%s", " ".join(command))
    process = subprocess.Popen(command, cwd=workdir, start_new_session=True)
    stopping = threading.Event()

    def stop(signum, _frame):
        if stopping.is_set():
            return
        stopping.set()
        logger.info("received %s: stopping MMS", signal.Signals(signum).name)
        _signal_group(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    while True:
        try:
            code = process.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if stopping.is_set():
            deadline = time.monotonic() + STOP_GRACE_S
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if process.poll() is None:
                logger.warning("MMS still running after %.0f s; killing it", STOP_GRACE_S)
                _signal_group(process.pid, signal.SIGKILL)
            code = process.wait()
            break
    # The launcher has exited; make sure the Java frontend and workers went with it.
    _signal_group(process.pid, signal.SIGTERM)
    time.sleep(0.2)
    _signal_group(process.pid, signal.SIGKILL)
    if stopping.is_set():
        logger.info("MMS stopped")
        return 0
    logger.error("MMS exited on its own with code %s", code)
    return code or 1


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def unhealthy_handler(reason: str, max_body_bytes: int):
    """A request handler class answering 503 ``{"error": reason}`` on /ping and /invocations."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "dogbreed-unhealthy"
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, message: str) -> None:
            body = json.dumps({"error": message}).encode()
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

        def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's name
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``serve``; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only validate the model; exit 0 if it loads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s - %(message)s")

    try:
        env = ServingEnvironment.from_env()
    except ConfigurationError as exc:
        reason = f"bad configuration: {exc}"
        return 2 if args.check else run_unhealthy(port_from_env(), reason)
    reason = check_model(env)
    if args.check:
        if reason:
            logger.error("model check failed: %s", reason)
        return 1 if reason else 0
    if reason:
        return run_unhealthy(env.port, reason, env.max_payload_bytes + 1024 * 1024)
    return run_mms(env)


if __name__ == "__main__":
    sys.exit(main())
