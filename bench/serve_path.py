#!/usr/bin/env python3
"""Where one request's time goes inside the serving container: nginx, MMS's frontend, the worker, the handler.

    bench/serve_path [--archs efficientnet_lite0 resnet50] [--model-dir DIR] [--requests 100] [-e KEY=VALUE ...]

Starts ``dogbreed-serve`` with the model (bench/serve's models unless ``--model-dir``),
copies the photos in, and runs bench/path_probe.py inside the container: one request at
a time, alternating, to nginx, to MMS's inference port directly, and through a handler
service's ``handle`` in the probe's own process. MMS logs each request's "Backend
response time" (from handing it to the worker to the worker's answer, whole ms). So, at
concurrency 1, medians:

* nginx's hop = through nginx - to MMS directly;
* MMS's frontend (HTTP, queueing, the worker's turn) = to MMS directly - backend time;
* the worker's socket and MMS's Python side = backend time - the handler alone;
* the handler (decode, preprocess, run, JSON) = the handler alone.

The client is inside the container, so Docker's port forwarding is not in these figures
(bench/serve's are from outside). Prints what it measures first and a JSON object last.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import preflight  # noqa: E402
import serve  # noqa: E402
import serve_model  # noqa: E402
import serve_report  # noqa: E402
import servers  # noqa: E402

from dogbreed.serving.environment import ServingEnvironment  # noqa: E402

PROBE = Path(__file__).resolve().parent / "path_probe.py"
BACKEND = re.compile(r"Backend response time: (\d+)")


def probe(image: str, model_dir: Path, env: dict[str, str], photos: Path, requests: int) -> dict[str, float]:
    """One container, the probe inside it; the hops' medians in ms."""
    server = servers.start(image, model_dir, env, next(photos.rglob("*.jpg")).read_bytes())
    try:
        subprocess.run(["docker", "exec", server.name, "mkdir", "-p", "/tmp/photos"], check=True, timeout=60)
        subprocess.run(["docker", "cp", f"{photos}/.", f"{server.name}:/tmp/photos/"], check=True, timeout=300,
                       capture_output=True)
        before = len(BACKEND.findall(server.logs()))  # stdout and stderr are joined: count, not line numbers
        mms_port = ServingEnvironment.from_env({**env, "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}).mms_port
        with PROBE.open("rb") as script:
            proc = subprocess.run(["docker", "exec", "-i", *(f"-e{k}={v}" for k, v in env.items()), server.name,
                                   "python", "-", "--photos", "/tmp/photos", "--requests", str(requests),
                                   "--mms-port", str(mms_port)],
                                  stdin=script, capture_output=True, timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(f"the probe failed ({proc.returncode}):\n{proc.stdout[-2000:]!r}{proc.stderr[-3000:]!r}")
        hops = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        backend = [int(ms) for ms in BACKEND.findall(server.logs())[before:]]
    finally:
        server.remove()
    nginx, mms, handler = (hops[k]["median_ms"] for k in ("nginx -> MMS -> worker", "MMS -> worker",
                                                           "handler in-process"))
    worker = statistics.median(backend)
    return {"through nginx": nginx, "to MMS directly": mms, "MMS backend time": worker, "handler alone": handler,
            "nginx hop": nginx - mms, "MMS frontend": mms - worker, "worker socket + MMS Python": worker - handler,
            "p10": {k: v["p10_ms"] for k, v in hops.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/serve_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", choices=sorted(serve.DEFAULT_MODELS), default=["efficientnet_lite0"])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--image", default="dogbreed-serve:latest")
    parser.add_argument("--train-image", default="dogbreed-train:latest", help="trains a missing default model")
    parser.add_argument("--photos", type=Path, default=serve.DATA / "valid")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args(argv)
    # MMS logs each request's "Backend response time", which the probe reads, at debug only.
    env = {"SAGEMAKER_CONTAINER_LOG_LEVEL": "debug", **dict(e.split("=", 1) for e in args.env)}
    cpu = preflight.cpu_description()
    print(f"bench/serve_path: one request at a time inside {args.image}: through nginx, to MMS directly, the "
          f"handler alone; {args.requests} requests each on {args.photos}; {cpu}", flush=True)
    preflight.require_images("bench/serve_path", args.image)
    dirs = [args.model_dir] if args.model_dir else [
        serve_model.ensure_model_dir(serve.DATA, args.train_image, *serve.DEFAULT_MODELS[a]) for a in args.archs]
    results = {}
    for model_dir in dirs:
        name = serve_report.model_arch(model_dir)
        results[name] = figures = probe(args.image, model_dir, env, args.photos.resolve(), args.requests)
        print(f"\n{serve_report.model_summary(model_dir)}, concurrency 1, medians:")
        for key, value in figures.items():
            if key != "p10":
                print(f"  {key:<28} {value:7.2f} ms")
        print("  10th percentiles: " + ", ".join(f"{k} {v:.2f} ms" for k, v in figures["p10"].items()))
    print(json.dumps({"cpu": cpu, "image": args.image, "env": env, "models": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
