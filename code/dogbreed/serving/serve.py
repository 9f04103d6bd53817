"""The container's ``serve`` program: prepare the model, then run multi-model-server.

SageMaker starts the container as ``docker run IMAGE serve``. This process:

1. reads every setting once (:class:`ServingEnvironment`);
2. installs the model's ``code/requirements.txt``, if it has one
   (:func:`~dogbreed.serving.user_code.install_requirements`);
3. starts the handler service once exactly as each worker will (``code/inference.py``
   and ``model_fn``). If step 2 or 3 fails, the reason is logged and
   :mod:`dogbreed.serving.unhealthy` answers ``/ping`` and ``/invocations`` with 503
   ``{"error": reason}`` instead (``serve --check`` exits 1);
4. otherwise starts MMS on loopback ports and nginx on the public one
   (:mod:`dogbreed.serving.front`: ``/ping`` is 200 only once every worker has loaded the
   model, :mod:`dogbreed.serving.readiness`; ``/execution-parameters`` for Batch
   Transform), each in its own process group. On SIGTERM or SIGINT nginx finishes the
   requests in flight, then both groups are stopped, with SIGKILL after a grace period
   well inside SageMaker's 30 s. If either exits on its own, the other is stopped and
   ``serve`` exits non-zero, saying which.

On a multi-model endpoint (``SAGEMAKER_MULTI_MODEL=true``) there is no model at start:
steps 2 and 3 are skipped, MMS starts with none (its model store ``/``, since SageMaker
names each model it loads by its absolute path) and ``/ping`` is MMS's own, 200 once it is
up; SageMaker then loads models through nginx (:mod:`dogbreed.serving.front`) and
:mod:`dogbreed.serving.multi_model`.

Not the toolkit's ``model_server.start_model_server``: that one publishes the management
API on the inference port, sets no request-size margin for our JSON 413, turns the JVM's
container support off, and on SIGTERM signals the frontend only.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

from dogbreed.artifacts import ModelLoadError
from dogbreed.serving import front
from dogbreed.serving.children import Child, OutputRelay, stop_children
from dogbreed.serving.environment import ConfigurationError, ServingEnvironment, port_from_env
from dogbreed.serving.multi_model import LoadRelay, Management
from dogbreed.serving.readiness import LOADED_DIR_ENV, ReadyWatch
from dogbreed.serving.unhealthy import run_unhealthy
from dogbreed.serving.user_code import RequirementsError, install_requirements

logger = logging.getLogger("dogbreed.serve")

HANDLER = "dogbreed.serving.handler_service:handle"
MODEL_NAME = "model"
# MMS's log4j2 configuration, with a placeholder for each level (see mms_log_config).
LOG_CONFIG_TEMPLATE = Path(__file__).with_name("log4j2.xml")
# log4j's names for the Python logging levels SAGEMAKER_CONTAINER_LOG_LEVEL allows.
LOG4J_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}
# MMS joins a model's location to its store: multi-model loads name absolute paths.
MULTI_MODEL_STORE = "/"
# SIGTERM -> SIGKILL escalation; SageMaker and `docker stop` allow 30 s / 10 s.
STOP_GRACE_S = 8.0
# What MMS may send back: SageMaker's real-time limit. JSON answers are a few kB, but an
# overlay PNG (Accept: image/png, at most 1024 pixels a side) of a detailed photo passes 1 MiB.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024


def check_model(env: ServingEnvironment) -> str | None:
    """Start the handler service once as a worker would; None when fine, else the reason.

    That imports ``code/inference.py`` (if any) and runs ``model_fn``, ours or the user's.
    """
    # Imported after install_requirements, so the check loads onnxruntime and the toolkit's handler
    # modules as code/requirements.txt left them, as each worker will.
    from dogbreed.serving.handler_service import HandlerService  # noqa: PLC0415 - after the install, see above
    from dogbreed.serving.predictor import Predictor  # noqa: PLC0415 - after the install, see above

    service = HandlerService(settings=env)
    try:
        service.initialize(SimpleNamespace(system_properties={"model_dir": env.model_dir}))
    except ModelLoadError as exc:
        return str(exc)
    except Exception as exc:
        logger.exception("loading the model failed")
        return f"loading the model from {env.model_dir} failed: {exc!r}"
    model = service.transformer.model
    if isinstance(model, Predictor):
        logger.info(
            "model OK: %s, %d classes: %s",
            model.metadata.arch,
            len(model.classes),
            ", ".join(model.classes[:5]) + (" ..." if len(model.classes) > 5 else ""),
        )
    else:
        logger.info("model OK: model_fn returned a %s", type(model).__name__)
    del service, model
    gc.collect()
    return None


def prepare(env: ServingEnvironment) -> str | None:
    """Install ``code/requirements.txt``, then :func:`check_model`; None when ready, else the reason."""
    try:
        install_requirements(env.model_dir)
    except RequirementsError as exc:
        return str(exc)
    return check_model(env)


def model_store(env: ServingEnvironment) -> str:
    """MMS's model store: the model dir's parent, or ``/`` on a multi-model endpoint."""
    return MULTI_MODEL_STORE if env.multi_model else str(Path(env.model_dir).parent)


def mms_config(env: ServingEnvironment) -> str:
    """The MMS ``config.properties`` text for ``env``."""
    properties = {
        # nginx (dogbreed.serving.front) owns the public port and passes /invocations on.
        "inference_address": f"http://127.0.0.1:{env.mms_port}",
        "management_address": f"http://127.0.0.1:{env.management_port}",
        "model_store": model_store(env),
        "default_service_handler": HANDLER,
        "default_workers_per_model": env.workers,
        "default_response_timeout": env.timeout_s,
        "unregister_model_timeout": env.timeout_s,
        "max_request_size": env.mms_max_request_size,
        "max_response_size": MAX_RESPONSE_BYTES,
        # Bodies reach the handler as raw bytes, whatever the Content-Type says.
        "decode_input_request": "false",
        # Settings come from this file only, not from MMS_* variables.
        "enable_envvars_config": "false",
        "preload_model": "false",
        "async_logging": "true",
        "vmargs": env.vmargs,
    }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def mms_log_config(env: ServingEnvironment) -> str:
    """MMS's log4j2.xml for ``env.log_level``.

    MMS's own lines and the workers' follow the level; the lines it writes per request (its
    access line, ACCESS_LOG, and each request's "Backend response time") only at debug;
    warnings of other libraries always, errors only at error.
    """
    debug = env.log_level <= logging.DEBUG
    return LOG_CONFIG_TEMPLATE.read_text().format(
        mms=LOG4J_LEVELS[env.log_level],
        access="info" if debug else "warn",
        response_time="NEUTRAL" if debug else "DENY",
        root="error" if env.log_level >= logging.ERROR else "warn",
    )


def mms_command(env: ServingEnvironment, config_path: str, log_config_path: str) -> list[str]:
    """The multi-model-server command line (foreground, so we can wait on it)."""
    command = [
        "multi-model-server",
        "--start",
        "--foreground",
        "--mms-config",
        config_path,
        "--log-config",
        log_config_path,
        "--model-store",
        model_store(env),
    ]
    if env.multi_model:
        return command
    # MMS resolves the model's location relative to the model store.
    return [*command, "--models", f"{MODEL_NAME}={Path(env.model_dir).name}"]


def log_settings(env: ServingEnvironment) -> None:
    """One line for the layout, and what Batch Transform asked for, if this is a transform job."""
    logger.info(
        "serving on port %d: %d worker(s) x %d ORT thread(s) on %d CPU(s), payload limit %d bytes",
        env.port,
        env.workers,
        env.ort_threads,
        env.cpus,
        env.max_payload_bytes,
    )
    if not env.batch:
        return
    logger.info(
        "batch transform: strategy %s, %s concurrent transform(s); /execution-parameters answers %s",
        env.batch_strategy or "not set",
        env.max_concurrent_transforms or "not set",
        front.execution_parameters(env),
    )
    if env.batch_strategy == "MULTI_RECORD":
        logger.warning(
            "SAGEMAKER_BATCH_STRATEGY=MULTI_RECORD: each request must still hold one whole image "
            "(use SplitType None); several images in one body are refused with 400"
        )
    if (env.max_concurrent_transforms or 0) > env.workers:
        logger.info(
            "%d concurrent transforms for %d worker(s): the others wait in MMS's queue",
            env.max_concurrent_transforms,
            env.workers,
        )


def start_mms(env: ServingEnvironment, files: front.FrontFiles) -> tuple[Child, OutputRelay]:
    """Write MMS's configuration and start it, its output relayed through ours."""
    config_path = files.workdir / "config.properties"
    config_path.write_text(mms_config(env))
    log_config_path = files.workdir / "log4j2.xml"
    log_config_path.write_text(mms_log_config(env))
    # MMS refuses to start if its pid file names a live process; after a container
    # restart the stale file can name an unrelated pid (even ours).
    Path(tempfile.gettempdir(), ".model_server.pid").unlink(missing_ok=True)
    child = Child.start(
        "MMS",
        mms_command(env, str(config_path), str(log_config_path)),
        cwd=files.workdir,
        # Multi-model: /ping is MMS's own, no worker counts (dogbreed.serving.front).
        env=os.environ.copy() if env.multi_model else {**os.environ, LOADED_DIR_ENV: str(files.loaded_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert child.process.stdout is not None, "started with stdout=PIPE"
    return child, OutputRelay(child.process.stdout).start()


def run_server(env: ServingEnvironment) -> int:
    """Run MMS behind nginx until SIGTERM/SIGINT (0) or until either exits on its own (non-zero)."""
    files = front.FrontFiles(Path(tempfile.mkdtemp(prefix="dogbreed-serve-")))
    front.write_config(env, files)
    log_settings(env)
    stopping = threading.Event()

    def stop(signum, _frame):
        if not stopping.is_set():
            logger.info("received %s: stopping nginx and MMS", signal.Signals(signum).name)
            stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    mms, relay = start_mms(env, files)
    if env.multi_model:
        # A daemon thread: nginx is its only client, and it ends with this process.
        LoadRelay(files.relay_socket, Management(env.management_port, front.proxy_timeout_s(env))).start()
    nginx = Child.start("nginx", front.nginx_command(files))
    children = [nginx, mms]
    watch_stop = threading.Event()
    if env.multi_model:
        watch = None
    else:
        # MMS gives a worker `timeout_s` to load the model before restarting it: after two
        # of those, something is wrong and worth saying.
        watch = ReadyWatch(
            files.loaded_dir, files.ready_file, env.workers, warn_after_s=2 * env.timeout_s, problems=relay.problems
        )
        threading.Thread(target=watch.run, args=(watch_stop,), name="ready-watch", daemon=True).start()

    exited = None
    while not stopping.is_set() and exited is None:
        stopping.wait(0.5)
        exited = next((child for child in children if child.exit_code() is not None), None)
    watch_stop.set()
    if watch is not None:
        watch.withdraw()

    if exited is None:
        stop_children(children, {"nginx": signal.SIGQUIT}, STOP_GRACE_S)
        logger.info("nginx and MMS stopped")
        return 0
    code = exited.exit_code()
    logger.error("%s exited on its own with code %s; stopping the rest and exiting", exited.name, code)
    stop_children(children, {}, STOP_GRACE_S)
    return code if code and code > 0 else 1


def configure_logging(level: int) -> None:
    """This process's log lines, from ``level`` up, to stderr."""
    logging.basicConfig(level=level, format="%(asctime)s [%(levelname)s] %(name)s - %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``serve``; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="only install code/requirements.txt and load the model; exit 0 if that works",
    )
    args = parser.parse_args(argv)
    try:
        env = ServingEnvironment.from_env()
    except ConfigurationError as exc:
        configure_logging(logging.INFO)
        return 2 if args.check else run_unhealthy(port_from_env(), f"bad configuration: {exc}")
    configure_logging(env.log_level)
    # A multi-model endpoint starts with no model: each is checked as a worker loads it.
    reason = None if env.multi_model else prepare(env)
    if args.check:
        if reason:
            logger.error("model check failed: %s", reason)
        return 1 if reason else 0
    if reason:
        return run_unhealthy(env.port, reason, env.max_payload_bytes + 1024 * 1024)
    return run_server(env)


if __name__ == "__main__":
    sys.exit(main())
