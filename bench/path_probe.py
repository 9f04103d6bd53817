#!/usr/bin/env python3
"""Inside a running dogbreed-serve container: one request's time at each hop (bench/serve_path runs it).

    docker exec -i NAME python - --photos /tmp/photos --requests 100 --mms-port 8082 < bench/path_probe.py

Standard library and the image's own package only (piped in on stdin, so no mount is
needed). Sends the photos one at a time (concurrency 1) over one kept-alive HTTP/1.1
connection from inside the container, so no Docker port forwarding is in the figure:

* to nginx (``SAGEMAKER_BIND_TO_PORT``, 8080): the endpoint's whole path;
* to MMS's inference port directly: the path without nginx;
* through a :class:`HandlerService`'s ``handle`` in this process: the handler alone.

The passes alternate photo by photo, so other work on the CPUs falls on all three alike.
Prints the median and the 10th percentile of each (on busy CPUs the lower one is nearer
the work itself); the last line is a JSON object of both, in ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path

JPEG = "image/jpeg"


def http_caller(port: int):
    """``call(body)``: POST /invocations on one kept-alive connection; anything but 200 raises."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(body: bytes) -> None:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": JPEG})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise SystemExit(f"port {port} answered {response.status}: {answer[:300]!r}")
        if response.getheader("Connection", "").lower() == "close":
            raise SystemExit(f"port {port} closed the connection after a 200")

    return call


def handler_caller():
    """``call(body)``: the handler service's ``handle`` on one request, as a worker calls it."""
    import mms
    from mms.context import Context, RequestProcessor

    from dogbreed.serving.environment import ServingEnvironment
    from dogbreed.serving.handler_service import HandlerService

    env = ServingEnvironment.from_env()
    service = HandlerService(env)
    context = Context("model", env.model_dir, {}, 1, None, mms.__version__)
    service.initialize(context)

    def call(body: bytes) -> None:
        processor = RequestProcessor({"Content-Type": JPEG, "body": {"content-type": JPEG}})
        context.request_processor, context.request_ids = [processor], {0: "probe"}
        service.handle([{"body": body}], context)
        if processor.get_response_status_code() != 200:
            raise SystemExit(f"handle answered {processor.get_response_status_code()}")

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="path_probe.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--mms-port", type=int, required=True)
    args = parser.parse_args(argv)
    bodies = [p.read_bytes() for p in sorted(args.photos.rglob("*.jpg"))]
    calls = {"nginx -> MMS -> worker": http_caller(args.port), "MMS -> worker": http_caller(args.mms_port),
             "handler in-process": handler_caller()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(args.requests + 8):
        body = bodies[i % len(bodies)]
        for name, call in calls.items():
            start = time.perf_counter()
            call(body)
            if i >= 8:  # warm-up excluded
                times[name].append((time.perf_counter() - start) * 1000)
    figures = {name: {"median_ms": statistics.median(v), "p10_ms": sorted(v)[len(v) // 10]} for name, v in times.items()}
    for name, f in figures.items():
        print(f"{name:<24} median {f['median_ms']:7.2f} ms  p10 {f['p10_ms']:7.2f} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
