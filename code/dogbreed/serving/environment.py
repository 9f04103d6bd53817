"""Every setting the serving container reads from its environment, parsed in one place.

SageMaker's own variables keep their documented meaning; ``DOGBREED_*`` ones are ours.
A value that does not parse raises :class:`ConfigurationError` naming the variable,
rather than being silently replaced by a default. Two more are read by the inference
toolkit's own ``Environment``: ``SAGEMAKER_PROGRAM`` (the module in ``code/``, default
``inference.py``) and ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (the Accept assumed for a
request without one, default ``application/json``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from dogbreed.cpus import usable_cpus
from dogbreed.explain import CHOICES as EXPLAIN_CHOICES
from dogbreed.explain import NO_MAP
from dogbreed.images import DEFAULT_MAX_PIXELS

MODEL_DIR_ENV = "DOGBREED_MODEL_DIR"
PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
SAFE_PORT_RANGE_ENV = "SAGEMAKER_SAFE_PORT_RANGE"
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
MAX_PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
VMARGS_ENV = "SAGEMAKER_MODEL_SERVER_VMARGS"
ORT_THREADS_ENV = "DOGBREED_ORT_THREADS"
TOP_K_ENV = "DOGBREED_TOP_K"
MAX_PIXELS_ENV = "DOGBREED_MAX_IMAGE_PIXELS"
# Which ONNX model to serve (see dogbreed.serving.predictor.choose_precision).
PRECISION_ENV = "DOGBREED_PRECISION"
INT8_MAX_LOSS_ENV = "DOGBREED_INT8_MAX_LOSS"
PRECISIONS = ("auto", "fp32", "int8")
# The map a request gets when it says nothing (X-Explain, explain=): batch transform sends
# no per-record headers, so a transform job that wants maps sets this to cam.
EXPLAIN_ENV = "DOGBREED_EXPLAIN"  # one of dogbreed.explain.CHOICES
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
# Set by SageMaker Batch Transform (the last three only when the job names them).
BATCH_ENV = "SAGEMAKER_BATCH"
BATCH_STRATEGY_ENV = "SAGEMAKER_BATCH_STRATEGY"
MAX_CONCURRENT_TRANSFORMS_ENV = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"
BATCH_STRATEGIES = ("SINGLE_RECORD", "MULTI_RECORD")
# The container's log level: the inference toolkit's name for it (sagemaker_inference.parameters),
# which the SageMaker Python SDK's framework models set from container_log_level as a Python
# logging number ("20"); a level's name works too. It also governs the per-request lines.
LOG_LEVEL_ENV = "SAGEMAKER_CONTAINER_LOG_LEVEL"
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Set on a multi-model endpoint (the model's container Mode=MultiModel): SageMaker loads and
# unloads models through POST /models, DELETE /models/<name> (dogbreed.serving.front).
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"

DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_S = 60
# SageMaker real-time endpoints accept at most 6 MB per request.
DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_TOP_K = 5
# Beyond ~4 threads a batch-1 ResNet50 scales poorly, while idle-by-default workers
# (spinning off) multiply the threads; not measured on more than 2 vCPUs here.
DEFAULT_MAX_ORT_THREADS = 4
# auto serves model.int8.onnx when it loses at most this much validation top-1 (percentage points).
DEFAULT_INT8_MAX_LOSS = 0.5
# The JVM only routes requests; keep its heap small so the workers get the memory.
DEFAULT_VMARGS = "-XX:+UseContainerSupport -XX:MaxRAMPercentage=20 -XX:+UseSerialGC"
# MMS's own request limit sits above ours (twice it, at least 1 MiB more), so the handler
# answers oversized bodies with our JSON 413; only a body over that gets MMS's own empty
# 413. Not unbounded: netty buffers each in-flight body whole.
MMS_REQUEST_SIZE_MARGIN = 1024 * 1024


class ConfigurationError(ValueError):
    """An environment variable holds a value the server cannot use."""


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int = 1, maximum: int | None = None):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigurationError(f"{name}={value} must be {bounds}")
    return value


@dataclass(frozen=True)
class ServingEnvironment:
    """A read-only snapshot of the serving settings."""

    model_dir: str = DEFAULT_MODEL_DIR
    port: int = DEFAULT_PORT
    management_port: int = DEFAULT_PORT + 1
    # MMS's inference API, on loopback behind nginx (dogbreed.serving.front).
    mms_port: int = DEFAULT_PORT + 2
    workers: int = 1
    ort_threads: int = 1
    timeout_s: int = DEFAULT_TIMEOUT_S
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_MB * 1024 * 1024
    top_k: int = DEFAULT_TOP_K
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    vmargs: str = DEFAULT_VMARGS
    cpus: int = 1
    batch: bool = False
    batch_strategy: str | None = None
    max_concurrent_transforms: int | None = None
    precision: str = "auto"
    int8_max_loss: float = DEFAULT_INT8_MAX_LOSS
    explain: str = NO_MAP
    default_accept: str = "application/json"
    # A Python logging level, one of LOG_LEVELS' values.
    log_level: int = logging.INFO
    multi_model: bool = False

    @property
    def mms_max_request_size(self) -> int:
        """``max_request_size`` for MMS: a little above the limit the handler enforces."""
        return max(2 * self.max_payload_bytes, self.max_payload_bytes + MMS_REQUEST_SIZE_MARGIN)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, cpus: int | None = None) -> ServingEnvironment:
        """Parse ``env`` (default ``os.environ``); raises :class:`ConfigurationError`."""
        env = os.environ if env is None else env
        cpus = usable_cpus() if cpus is None else cpus
        port = _int(env, PORT_ENV, DEFAULT_PORT, 1, 65535)
        management_port, mms_port = _loopback_ports(env, port)
        # One worker per core, each with ONNX Runtime threads for every core (at most
        # DEFAULT_MAX_ORT_THREADS), measured by bench/serve --layouts on 2 vCPUs (ResNet50
        # int8; c1 median ms / c4 req/s): 2x2 20.8 / 57.4, 1x2 21.8 / 49.5, 2x1 30.0 / 64.3.
        # A lone request gets all-cores latency, four get ~90% of the best throughput.
        # An explicit worker count is never overridden; ORT threads then share the cores.
        explicit_workers = _int(env, WORKERS_ENV, None)
        workers = explicit_workers or cpus
        threads = min(cpus, DEFAULT_MAX_ORT_THREADS) if explicit_workers is None else max(1, cpus // workers)
        ort_threads = _int(env, ORT_THREADS_ENV, threads)
        return cls(
            model_dir=env.get(MODEL_DIR_ENV, "").strip() or DEFAULT_MODEL_DIR,
            port=port,
            management_port=management_port,
            mms_port=mms_port,
            workers=workers,
            ort_threads=ort_threads,
            timeout_s=_int(env, TIMEOUT_ENV, DEFAULT_TIMEOUT_S),
            max_payload_bytes=_int(env, MAX_PAYLOAD_ENV, DEFAULT_MAX_PAYLOAD_MB, 1, 1024) * 1024 * 1024,
            top_k=_int(env, TOP_K_ENV, DEFAULT_TOP_K),
            max_image_pixels=_int(env, MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS),
            vmargs=env.get(VMARGS_ENV, "").strip() or DEFAULT_VMARGS,
            cpus=cpus,
            batch=_bool(env, BATCH_ENV),
            batch_strategy=_choice(env, BATCH_STRATEGY_ENV, BATCH_STRATEGIES),
            # 0 is the API's "not set": SageMaker then asks /execution-parameters.
            max_concurrent_transforms=_int(env, MAX_CONCURRENT_TRANSFORMS_ENV, None, minimum=0) or None,
            precision=_choice(env, PRECISION_ENV, PRECISIONS) or "auto",
            int8_max_loss=_float(env, INT8_MAX_LOSS_ENV, DEFAULT_INT8_MAX_LOSS),
            explain=_choice(env, EXPLAIN_ENV, EXPLAIN_CHOICES) or NO_MAP,
            default_accept=env.get(DEFAULT_ACCEPT_ENV, "").strip() or "application/json",
            log_level=_log_level(env),
            multi_model=_bool(env, MULTI_MODEL_ENV),
        )


def port_from_env(env: Mapping[str, str] | None = None) -> int:
    """The port to listen on even when other settings are broken (for the error server)."""
    env = os.environ if env is None else env
    try:
        return _int(env, PORT_ENV, DEFAULT_PORT, 1, 65535)
    except ConfigurationError:
        return DEFAULT_PORT


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigurationError(f"{name}={raw} must be a finite number of at least {minimum:g}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise ConfigurationError(f"{name}={raw!r} is not true or false")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    raw = env.get(name, "").strip()
    if raw and raw not in choices:
        raise ConfigurationError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw or None


def _log_level(env: Mapping[str, str]) -> int:
    """LOG_LEVEL_ENV as a Python logging level: a name of LOG_LEVELS (any case) or its number."""
    raw = env.get(LOG_LEVEL_ENV, "").strip()
    if not raw:
        return logging.INFO
    level = LOG_LEVELS.get(raw.lower())
    if level is None and raw.isdigit() and int(raw) in LOG_LEVELS.values():
        level = int(raw)
    if level is None:
        choices = ", ".join(f"{name} ({number})" for name, number in LOG_LEVELS.items())
        raise ConfigurationError(f"{LOG_LEVEL_ENV}={raw!r} is not one of {choices}")
    return level


def _loopback_ports(env: Mapping[str, str], port: int) -> tuple[int, int]:
    """Two loopback-only ports besides ``port``: MMS's management API and its inference API.

    SageMaker routes only to ``port`` (nginx); on a laptop the management API (which can
    register models from URLs) should not be on the published port either. Inside
    SAGEMAKER_SAFE_PORT_RANGE when given, else the next ports up (down near 65535).
    """
    raw = env.get(SAFE_PORT_RANGE_ENV, "").strip()
    if raw:
        try:
            low, high = (int(p) for p in raw.split("-", 1))
        except ValueError:
            raise ConfigurationError(f"{SAFE_PORT_RANGE_ENV}={raw!r} is not LOW-HIGH") from None
        candidates = [p for p in range(low, high + 1) if p != port][:2]
        if len(candidates) < 2:
            raise ConfigurationError(f"{SAFE_PORT_RANGE_ENV}={raw!r} has no two ports besides {port}")
        return candidates[0], candidates[1]
    return (port + 1, port + 2) if port <= 65533 else (port - 1, port - 2)
