#!/usr/bin/env python3
"""Benchmark the serving container against the model alone.

    bench/serve --model-dir build/opt_ml/model          # starts dogbreed-serve:latest itself
    bench/serve --url http://127.0.0.1:8080 --model-dir build/opt_ml/model

POSTs real photos to /invocations at each concurrency (default 1 and 4) and prints median
and p99 latency and requests/s, beside the same figures for the ONNX model alone run
in-process with ONNX Runtime on the same machine (same model file, same preprocessed
inputs, the server's worker/thread layout): that is the limit the endpoint approaches.
Request counts are bounded; this is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "code"))
DEFAULT_PHOTOS = Path(os.environ.get("DOGBREED_TEST_DATA", REPO.parent / "shared" / "data" / "dogs-3breeds")) / "valid"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def drive(call, items: list, concurrency: int, requests: int) -> dict[str, float]:
    """Run ``call(item)`` ``requests`` times from ``concurrency`` threads; latency and rate."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        start = time.perf_counter()
        call(items[i % len(items)], i)
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {
        "median_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "rps": requests / wall,
    }


def endpoint_caller(url: str):
    import requests

    local = threading.local()

    def call(body: bytes, _i: int) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(url + "/invocations", data=body, headers={"Content-Type": "image/jpeg"}, timeout=120)
        if response.status_code != 200:
            raise RuntimeError(f"/invocations answered {response.status_code}: {response.text[:300]}")

    return call


def model_caller(model_dir: Path, workers: int, threads: int):
    """In-process ORT: ``workers`` sessions of ``threads`` threads, as the server runs them."""
    from dogbreed.serving.predictor import Predictor

    predictors = [Predictor(model_dir, threads=threads) for _ in range(workers)]

    def call(tensor, i: int) -> None:
        predictors[i % workers].run(tensor[None])

    return predictors[0], call


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_container(image: str, model_dir: Path, env: list[str]) -> tuple[str, str]:
    import requests

    name, port = f"dogbreed-bench-{uuid.uuid4().hex[:8]}", free_port()
    cmd = ["docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
           "-v", f"{model_dir.resolve()}:/opt/ml/model:ro"]
    for e in env:
        cmd += ["-e", e]
    subprocess.run(cmd + [image, "serve"], check=True, capture_output=True, timeout=120)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/ping", timeout=5).status_code == 200:
                return name, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    raise SystemExit(f"the container never became healthy:\n{logs[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running endpoint (default: start IMAGE on a free loopback port)")
    parser.add_argument("--model-dir", type=Path, required=True, help="the served model dir (for the model-only figure)")
    parser.add_argument("--image", default=os.environ.get("SERVE_IMAGE", "dogbreed-serve:latest"))
    parser.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE for the started container")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="a folder of JPEGs (searched recursively)")
    parser.add_argument("--requests", type=int, default=100, help="requests per concurrency level (max 2000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--warmup", type=int, default=8)
    args = parser.parse_args(argv)
    n = max(1, min(args.requests, 2000))

    photos = sorted(args.photos.rglob("*.jpg"))[:32]
    if not photos:
        raise SystemExit(f"no .jpg photos under {args.photos}")
    bodies = [p.read_bytes() for p in photos]

    from dogbreed.serving.environment import ServingEnvironment

    env = ServingEnvironment.from_env(dict(e.split("=", 1) for e in args.env))
    predictor, model_call = model_caller(args.model_dir, env.workers, env.ort_threads)
    tensors = [predictor.preprocess(b) for b in bodies]
    start = time.perf_counter()
    for b in bodies:
        predictor.preprocess(b)
    decode_ms = (time.perf_counter() - start) / len(bodies) * 1000

    container = None
    url = args.url
    if not url:
        container, url = start_container(args.image, args.model_dir, args.env)
    try:
        call = endpoint_caller(url.rstrip("/"))
        rows = []
        for c in args.concurrency:
            drive(call, bodies, c, args.warmup)
            drive(model_call, tensors, c, args.warmup)
            served = drive(call, bodies, c, n)
            alone = drive(model_call, tensors, c, n)
            rows.append((c, served, alone))
    finally:
        if container:
            subprocess.run(["docker", "stop", container], capture_output=True, timeout=60)

    print(f"model: {args.model_dir}  photos: {len(bodies)}  requests per level: {n}  cpus: {env.cpus}  "
          f"layout: {env.workers} worker(s) x {env.ort_threads} ORT thread(s)")
    print(f"decode + preprocess in-process (not in the model-only figure): {decode_ms:.1f} ms per photo")
    header = f"{'concurrency':>11} | {'endpoint median/p99 ms':>22} {'req/s':>7} | {'model-only median/p99 ms':>24} {'req/s':>7} | {'throughput ratio':>16}"
    print(header)
    print("-" * len(header))
    for c, s, a in rows:
        print(f"{c:>11} | {s['median_ms']:>10.1f} / {s['p99_ms']:>9.1f} {s['rps']:>7.1f} | "
              f"{a['median_ms']:>12.1f} / {a['p99_ms']:>9.1f} {a['rps']:>7.1f} | {s['rps'] / a['rps']:>15.0%}")
    print(json.dumps({"results": [{"concurrency": c, "endpoint": s, "model_only": a} for c, s, a in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
