"""nginx in front of multi-model-server: the configuration ``serve`` writes for it.

Why nginx: MMS 1.1.11 answers ``GET /ping`` with 200 as soon as its port is open (its
handler always sends 200; only the body says ``Partial Healthy`` or ``Unhealthy``), before
any worker has loaded the model, and it has no ``GET /execution-parameters``, which
SageMaker Batch Transform asks for. So, as SageMaker's own bring-your-own-container
example puts nginx in front of gunicorn, nginx owns the public port
(``SAGEMAKER_BIND_TO_PORT``) and MMS's inference API moves to a loopback port:

* ``/ping``: 200 ``{"status": "Healthy"}`` while the ready file exists, else 503 JSON.
  ``serve`` keeps the file (:mod:`dogbreed.serving.readiness`);
* ``GET /execution-parameters``: :func:`execution_parameters`, fixed at start-up;
* ``/invocations``: passed to MMS over kept-alive HTTP/1.1 connections. The body limit
  is MMS's own (``mms_max_request_size``), above the handler's, so the handler still
  answers an oversized body with its JSON 413 and nginx only refuses what MMS would
  have refused with an empty one;
* anything else: 404 JSON; and nginx's own errors (413, 502, 504, ...) are JSON too.

On a multi-model endpoint (``SAGEMAKER_MULTI_MODEL=true``) SageMaker's multi-model
contract replaces ``/invocations``, and MMS implements it: ``GET``/``POST /models`` go to
its management API through :class:`~dogbreed.serving.multi_model.LoadRelay` (which undoes
a failed load), ``GET``/``DELETE /models/<name>`` straight to it, and
``POST /models/<name>/invoke`` to its inference API. Their answers pass through as MMS
gives them: 409 for a name already loaded, 404 for an unknown one, 507 when a worker
could not load the model for lack of memory (:mod:`dogbreed.serving.memory`). ``/ping``
asks MMS itself, which answers 200 once it is up: no model is loaded at start.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dogbreed.serving.environment import ServingEnvironment

MIB = 1024 * 1024
SINGLE_MODEL_PATHS = "this endpoint serves GET /ping, POST /invocations and GET /execution-parameters"
MULTI_MODEL_PATHS = (
    "this multi-model endpoint serves GET /ping, GET and POST /models, "
    "GET and DELETE /models/<name> and POST /models/<name>/invoke"
)
NOT_READY = "not ready: the model server's workers are loading the model; retry shortly"
# Internal locations answering nginx's own errors: a URI, not a named location, since a
# request nginx could not parse has no URI to carry into a named one.
ERROR_PREFIX = "/.dogbreed-error/"
# Bodies up to this size stay in memory; larger ones (batch payloads) go to a temp file
# in the run's directory. nginx allocates the whole buffer for a chunked body.
MAX_BODY_BUFFER = 16 * MIB
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass(frozen=True)
class FrontFiles:
    """Where nginx's files for one run live, all under ``workdir``."""

    workdir: Path

    @property
    def config(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def ready_file(self) -> Path:
        return self.workdir / "ready"

    @property
    def loaded_dir(self) -> Path:
        return self.workdir / "loaded"

    @property
    def relay_socket(self) -> Path:
        """Where :class:`~dogbreed.serving.multi_model.LoadRelay` listens (multi-model only)."""
        return self.workdir / "models.sock"

    @property
    def nginx_dir(self) -> Path:
        return self.workdir / "nginx"


def execution_parameters(env: ServingEnvironment) -> dict[str, object]:
    """The answer to ``GET /execution-parameters``: what Batch Transform should send.

    One image per request (``SINGLE_RECORD``: an image cannot be split into records),
    as many requests at once as there are workers, and the payload limit in MB.
    """
    return {
        "MaxConcurrentTransforms": env.workers,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": env.max_payload_bytes // MIB,
    }


def proxy_timeout_s(env: ServingEnvironment) -> int:
    """How long nginx waits on MMS: a request may queue behind one using its whole timeout."""
    return 2 * env.timeout_s


def error_messages(env: ServingEnvironment) -> dict[int, str]:
    """The ``{"error": ...}`` nginx itself answers with, by status."""
    paths = MULTI_MODEL_PATHS if env.multi_model else SINGLE_MODEL_PATHS
    return {
        400: "malformed HTTP request",
        404: f"unknown path; {paths}",
        405: f"method not allowed; {paths}",
        408: "the request took too long to arrive",
        413: (
            f"the request body is over {env.mms_max_request_size} bytes; this endpoint accepts images "
            f"of up to {env.max_payload_bytes} bytes ({env.max_payload_bytes / MIB:g} MiB)"
        ),
        414: "request URI too long",
        494: "request headers too large",
        500: "internal error in the endpoint's front server",
        502: "the model server did not answer (it is starting, restarting or stopping); retry shortly",
        504: f"the model server did not answer within {proxy_timeout_s(env)} s",
    }


def _string(value: object) -> str:
    """``value`` as JSON inside a single-quoted nginx string."""
    text = json.dumps(value)
    if "$" in text:  # nginx would read a variable; none of our texts needs a dollar
        raise ValueError(f"no '$' allowed in an nginx string: {text}")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def access_log(env: ServingEnvironment) -> str:
    """nginx's ``access_log``: a line per request, /ping included, to stdout only at debug.

    At info each invocation already has MMS's "Backend response time" line, and SageMaker's
    health checks would add a /ping line every few seconds.
    """
    return "access_log /dev/stdout" if env.log_level <= logging.DEBUG else "access_log off"


def _proxy(upstream: str, timeout_s: int) -> str:
    """The directives of a location passed on to ``upstream`` over kept-alive HTTP/1.1.

    Unbuffered: each answer goes to the client as it arrives, up to its Content-Length.
    MMS closes the connection after every answer that is not a 200, with a reset that
    nginx's buffered reader (which reads on after the answer) logged as an error,
    ``readv() failed (104: Connection reset by peer)``, once per 4xx; MMS is asynchronous,
    so a slow client holds a connection, not a worker.
    """
    return f"""            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 5s;
            proxy_send_timeout {timeout_s}s;
            proxy_read_timeout {timeout_s}s;
            proxy_buffering off;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;"""


def single_model_routes(env: ServingEnvironment, files: FrontFiles) -> str:
    """``/ping`` from the ready file, ``/execution-parameters``, ``/invocations`` to MMS."""
    return f"""        location = /ping {{
            if (-f "{files.ready_file}") {{
                return 200 {_string({"status": "Healthy"})};
            }}
            return 503 {_string({"error": NOT_READY})};
        }}

        location = /execution-parameters {{
            if ($request_method !~ ^(GET|HEAD)$) {{
                return 405;
            }}
            return 200 {_string(execution_parameters(env))};
        }}

        location = /invocations {{
{_proxy("mms", proxy_timeout_s(env))}
        }}"""


def multi_model_upstreams(env: ServingEnvironment, files: FrontFiles) -> str:
    """MMS's management API, and the relay in ``serve`` that loads through it."""
    return f"""
    upstream mms_management {{
        server 127.0.0.1:{env.management_port};
        keepalive 2;
    }}

    upstream load_relay {{
        server unix:{files.relay_socket};
        keepalive 2;
    }}
"""


def multi_model_routes(env: ServingEnvironment, files: FrontFiles) -> str:
    """SageMaker's multi-model contract, each path to the MMS API that implements it.

    Loading a model waits for its workers to start (``model_fn``), unloading for them to
    stop: both get the request timeout, as an invocation does.
    """
    timeout = proxy_timeout_s(env)
    return f"""        location = /ping {{
{_proxy("mms", timeout)}
        }}

        location = /models {{
            if ($request_method !~ ^(GET|POST)$) {{
                return 405;
            }}
{_proxy("load_relay", timeout)}
        }}

        location ~ ^/models/[^/]+$ {{
            if ($request_method !~ ^(GET|DELETE)$) {{
                return 405;
            }}
{_proxy("mms_management", timeout)}
        }}

        location ~ ^/models/[^/]+/invoke$ {{
            if ($request_method != POST) {{
                return 405;
            }}
{_proxy("mms", timeout)}
        }}"""


def nginx_config(env: ServingEnvironment, files: FrontFiles, user: str | None = None) -> str:
    """The nginx.conf text for ``env``; ``user`` is the workers' user when started as root."""
    temp_paths = "\n".join(f'    {name}_temp_path "{files.nginx_dir / name}";' for name in TEMP_PATHS)
    errors = error_messages(env)
    error_pages = "\n".join(f"        error_page {code} {ERROR_PREFIX}{code};" for code in errors)
    error_locations = "\n".join(
        f"        location = {ERROR_PREFIX}{code} {{\n            internal;\n"
        f"            return {400 if code == 494 else code} {_string({'error': text})};\n        }}"
        for code, text in errors.items()
    )
    routes = multi_model_routes(env, files) if env.multi_model else single_model_routes(env, files)
    return f"""# Written by dogbreed.serving.front for this run of `serve`.
{f"user {user};" if user else "# no user directive: not started as root"}
worker_processes 1;
daemon off;
pid "{files.nginx_dir / "nginx.pid"}";
error_log stderr {"error" if env.log_level >= logging.ERROR else "warn"};

events {{
    worker_connections 1024;
}}

http {{
    {access_log(env)};
    server_tokens off;
    default_type application/json;
    # Pass every header on as MMS received it before.
    underscores_in_headers on;
{temp_paths}

    upstream mms {{
        server 127.0.0.1:{env.mms_port};
        keepalive {max(8, 2 * env.workers)};
    }}
{multi_model_upstreams(env, files) if env.multi_model else ""}
    server {{
        listen {env.port} default_server;
        client_max_body_size {env.mms_max_request_size};
        client_body_buffer_size {min(env.mms_max_request_size, MAX_BODY_BUFFER)};

{routes}

        location / {{
            return 404 {_string({"error": errors[404]})};
        }}

{error_pages}
{error_locations}
    }}
}}
"""


def nginx_user() -> str | None:
    """The user nginx's worker runs as: ``www-data`` when started as root, else none to set."""
    return "www-data" if os.geteuid() == 0 else None


def write_config(env: ServingEnvironment, files: FrontFiles) -> Path:
    """Create the run's directories (readable by nginx's worker) and write nginx.conf."""
    for directory in (files.workdir, files.nginx_dir, files.loaded_dir):
        directory.mkdir(parents=True, exist_ok=True)
        # nginx's worker (www-data) must reach the ready file and its temp paths.
        directory.chmod(0o755)
    files.config.write_text(nginx_config(env, files, nginx_user()))
    return files.config


def nginx_command(files: FrontFiles) -> list[str]:
    """nginx in the foreground on the run's config; ``-e`` keeps it off /var/log from the start."""
    return ["nginx", "-c", str(files.config), "-p", str(files.nginx_dir), "-e", "stderr"]
