#!/usr/bin/env python3
"""The serving container against what users run today, and against the whole request in one process.

    bench/serve [--archs resnet50 efficientnet_lite0] [--model-dir DIR] [--requests 100] [--concurrency 1 4]
                [--no-baseline] [-e KEY=VALUE ...]
    bench/serve --layouts 1x2,2x1,2x2           # also: our server per workers x ORT threads
    bench/serve --explain                       # also: our server asked for class activation maps

For each model (``--model-dir``, else each of ``--archs``: bench/serve_model.py's ResNet50
and the pretrained EfficientNet-Lite0 of bench/serve_archs, trained when missing), in one
run, on the same CPUs, photos and client (:func:`drive`, one keep-alive session per
thread, at the container's own bridge address as SageMaker's router reaches a container,
not through docker-proxy: ``--published-port`` for that), each alone on the machine in turn:

1. the seed-style baseline (bench/baseline: MMS + sagemaker-inference started by the
   toolkit with its defaults, and a course-style ``inference.py`` in eager PyTorch with
   torchvision transforms), built from the training image in this run; it loads
   torchvision's networks only, so it runs for the ResNet;
2. ``dogbreed-serve`` (settings from ``-e``, else its defaults);
3. the whole request in one process, inside the serving image, in the server's layout and
   precision (bench/inprocess.py): the raw body through the handler's own decode,
   preprocessing, ONNX run and JSON answer, as many threads as the server has workers.
   Our server against it is what nginx -> MMS -> the worker add.

Per concurrency: median and p99 latency and requests/s, warm-up requests excluded; the
top-1 agreement of the two servers on the photos; the ratios against the targets, PASS or
FAIL per model: at concurrency 4 >= 2.5x the baseline's requests/s and >= 85% of the
in-process requests/s; at concurrency 1 a median <= 1/3 of the baseline's and <= 1.5x the
in-process one. With ``--explain`` our server is also
driven, at each level right after its plain requests, with ``X-Explain: cam`` (the JSON
answer with the top class's map) and ``Accept: image/png`` (the photo with the map
overlaid), and their figures are printed as ratios against the plain requests of the
same run. The last line per model is a JSON object. Request counts are bounded; this is
not part of the test suite.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import preflight
import serve_model  # noqa: E402
import serve_report  # noqa: E402
import servers  # noqa: E402
from serve_report import Figures, InProcessRun, KindRun, ServerRun  # noqa: E402

from dogbreed.architectures import architecture  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DOGBREED_TEST_DATA", REPO.parent / "shared" / "data" / "dogs-3breeds"))
WORKERS_ENV, THREADS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS", "DOGBREED_ORT_THREADS"
# What our server logs once about its setup (layout, precision and why); the workers'
# copies of the same lines come through MMS's WorkerLifeCycle logger and are left out.
OURS_SETUP = r"dogbreed\.serv\S* - .*(worker\(s\)|fp32|int8)"
BASELINE_SETUP = r"Default workers per model"
# --archs: each network's bench model, (tree, training hyperparameters) for serve_model.ensure_model_dir.
DEFAULT_MODELS = {
    "resnet50": (serve_model.DEFAULT_TREE, serve_model.HYPERPARAMETERS),
    "efficientnet_lite0": (serve_model.LITE0_TREE, serve_model.LITE0_HYPERPARAMETERS),
}
# What each kind of request adds to the plain one (Content-Type: image/jpeg).
PLAIN = "plain"
EXPLAIN_KINDS = {"X-Explain: cam": {"X-Explain": "cam"}, "Accept: image/png": {"Accept": "image/png"}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def drive(call, items: list, concurrency: int, requests: int) -> Figures:
    """Run ``call(item, i)`` ``requests`` times from ``concurrency`` threads; latency and rate."""
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
    return Figures(statistics.median(latencies) * 1000, percentile(latencies, 99) * 1000, requests / wall)


def select_photos(folder: Path, limit: int = 96) -> list[Path]:
    """Up to ``limit`` JPEGs under ``folder``, the classes interleaved, in a fixed order."""
    by_class: dict[Path, list[Path]] = {}
    for path in sorted(folder.rglob("*.jpg")):
        by_class.setdefault(path.parent, []).append(path)
    photos = [p for group in zip(*by_class.values()) for p in group]
    taken = set(photos)
    leftovers = [p for paths in by_class.values() for p in paths if p not in taken]
    return (photos + leftovers)[:limit]


def endpoint_caller(url: str, headers: dict[str, str] | None = None):
    """``call(body, i)`` for :func:`drive`: POST /invocations on one keep-alive connection per thread.

    Returns the JSON answer, or the bytes of an ``image/png`` one; anything but a 200 raises.
    The standard library's client, not requests: the client shares the server's CPUs, and
    requests spends about a millisecond of them per call on what a keep-alive POST does not need.
    """
    parsed = urlsplit(url)
    local = threading.local()
    sent = {"Content-Type": "image/jpeg", **(headers or {})}

    def call(body: bytes, _i: int):
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        local.connection.request("POST", "/invocations", body=body, headers=sent)
        response = local.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            local.connection.close()  # the server closes after an error answer
            del local.connection
            raise RuntimeError(f"/invocations answered {response.status}: {answer[:300]!r}")
        if (response.getheader("Content-Type") or "").startswith("image/png"):
            return answer
        return json.loads(answer)

    return call


def check_explained(kind: str, call, bodies: list[bytes]) -> float:
    """Check that ``kind`` of request gets its map on a few photos; the answers' mean size in bytes."""
    sizes = []
    for body in bodies[:8]:
        answer = call(body, 0)
        if kind == "Accept: image/png":
            if not isinstance(answer, bytes) or not answer.startswith(b"\x89PNG"):
                raise SystemExit(f"{kind}: the server did not answer a PNG")
            sizes.append(len(answer))
        else:
            if "explanation" not in answer:
                raise SystemExit(f"{kind}: the answer has no explanation: {str(answer)[:300]}")
            sizes.append(len(json.dumps(answer)))
    return statistics.mean(sizes)


def measure_server(image: str, model_dir: Path, env: dict[str, str], bodies: list[bytes], args,
                   setup_pattern: str, explain: bool = False) -> ServerRun:
    """Start ``image``, record its answer to each photo, drive it at each concurrency, stop it.

    With ``explain``, each level also drives the :data:`EXPLAIN_KINDS` right after the plain
    requests, on the same photos and server.
    """
    server = servers.start(image, model_dir, env, bodies[0], direct=not args.published_port)
    try:
        call = endpoint_caller(server.url)
        answers = [call(body, 0) for body in bodies]
        top1 = [a["predicted_label"] for a in answers]
        probabilities = [{e["label"]: e["probability"] for e in a["top_k"]} for a in answers]
        calls = {PLAIN: call}
        sizes = {PLAIN: statistics.mean(len(json.dumps(a)) for a in answers[:8])}
        for kind, headers in (EXPLAIN_KINDS.items() if explain else ()):
            calls[kind] = endpoint_caller(server.url, headers)
            sizes[kind] = check_explained(kind, calls[kind], bodies)
        figures: dict[str, dict[int, Figures]] = {kind: {} for kind in calls}
        for c in args.concurrency:
            for kind, kind_call in calls.items():
                drive(kind_call, bodies, c, args.warmup)
                figures[kind][c] = drive(kind_call, bodies, c, args.requests)
        kinds = {kind: KindRun(figures[kind], sizes[kind]) for kind in calls} if explain else {}
        return ServerRun(figures[PLAIN], top1, probabilities, server.log_lines(setup_pattern), kinds)
    finally:
        server.remove()


def measure_in_process(image: str, model_dir: Path, env: dict[str, str], photos: Path, args) -> InProcessRun:
    """bench/inprocess.py in the serving image with ``env``; its JSON line."""
    cmd = ["docker", "run", "--rm", "--entrypoint", "python", "-v", f"{model_dir.resolve()}:/opt/ml/model:ro",
           "-v", f"{REPO / 'bench'}:/opt/bench:ro", "-v", f"{photos.resolve()}:/photos:ro"]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    cmd += [image, "/opt/bench/inprocess.py", "--photos", "/photos", "--requests", str(args.requests),
            "--warmup", str(args.warmup), "--concurrency", *map(str, args.concurrency)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the in-process run failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    figures = {int(c): Figures(**f) for c, f in out["results"].items()}
    return InProcessRun(figures, out["precision"], out["workers"], out["ort_threads"], out["stages_ms"])


def check_can_explain(model_dir: Path) -> None:
    """Exit before anything starts when ``--explain`` meets a model exported before class activation maps."""
    if json.loads((model_dir / "model.json").read_text()).get("explain") is None:
        raise SystemExit(f"--explain: {model_dir} was exported before class activation maps (model.json has no "
                         f"explain); pass a newer --model-dir (for the default model, delete "
                         f"{serve_model.DEFAULT_TREE} so that a new one is trained)")


def parse_layouts(text: str) -> list[tuple[int, int]]:
    """``"1x2,2x1"`` -> [(1, 2), (2, 1)]: workers x ORT threads."""
    layouts = []
    for item in text.split(","):
        workers, sep, threads = item.strip().partition("x")
        if not sep or not workers.isdigit() or not threads.isdigit() or int(workers) < 1 or int(threads) < 1:
            raise argparse.ArgumentTypeError(f"layout {item!r} is not WORKERSxTHREADS, e.g. 2x1")
        layouts.append((int(workers), int(threads)))
    return layouts


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="bench/serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="a trained model dir (default: --archs' models)")
    parser.add_argument("--archs", nargs="+", choices=sorted(DEFAULT_MODELS), default=list(DEFAULT_MODELS),
                        help="without --model-dir: the networks measured, one after another, each trained for it "
                             "when missing (bench/serve_model.py, bench/serve_archs.py)")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the seed-style server")
    parser.add_argument("--published-port", action="store_true",
                        help="reach the servers through a published loopback port (docker-proxy, whose copying "
                        "counts against the server on the same CPUs) instead of their own bridge address")
    parser.add_argument("--image", default=os.environ.get("SERVE_IMAGE", "dogbreed-serve:latest"))
    parser.add_argument("--train-image", default=os.environ.get("TRAIN_IMAGE", "dogbreed-train:latest"),
                        help="the baseline's base image (and the image that trains a default model)")
    parser.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE for our server and the in-process run")
    parser.add_argument("--photos", type=Path, default=DATA / "valid", help="a folder of JPEGs (searched recursively)")
    parser.add_argument("--requests", type=int, default=100, help="requests per concurrency level (max 2000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--warmup", type=int, default=8, help="requests per level before the measured ones")
    parser.add_argument("--layouts", type=parse_layouts, default=[],
                        help="also run our server (and the in-process model) per layout WORKERSxTHREADS,...")
    parser.add_argument("--explain", action="store_true",
                        help="also drive our server with X-Explain: cam and Accept: image/png requests "
                             "(ratios against its plain requests); needs a model with class activation maps")
    args = parser.parse_args(argv)
    args.requests = max(1, min(args.requests, 2000))
    return args


def model_dirs(args) -> list[Path]:
    """``--model-dir``, else each of ``--archs``' bench models (trained in the training image when missing)."""
    if args.model_dir:
        return [args.model_dir]
    return [serve_model.ensure_model_dir(DATA, args.train_image, *DEFAULT_MODELS[arch]) for arch in args.archs]


def with_baseline(args, model_dir: Path) -> bool:
    """Whether the seed-style server runs for this model: it loads torchvision's networks only."""
    return not args.no_baseline and architecture(serve_report.model_arch(model_dir)).family == "resnet"


def measure_model(args, model_dir: Path, env: dict[str, str], bodies: list[bytes]) -> int:
    """The servers and the in-process run for one model, printed; the exit code of :func:`serve_report.print_all`."""
    if args.explain:
        check_can_explain(model_dir)
    load_before = os.getloadavg()
    baseline = None
    if with_baseline(args, model_dir):
        baseline = measure_server(servers.BASELINE_IMAGE, model_dir, {}, bodies, args, BASELINE_SETUP)
    ours = measure_server(args.image, model_dir, env, bodies, args, OURS_SETUP, explain=args.explain)
    alone = measure_in_process(args.image, model_dir, env, args.photos, args)
    layouts = []
    for workers, threads in args.layouts:
        layout_env = {**env, WORKERS_ENV: str(workers), THREADS_ENV: str(threads)}
        run = measure_server(args.image, model_dir, layout_env, bodies, args, OURS_SETUP)
        layouts.append(((workers, threads), run, measure_in_process(args.image, model_dir, layout_env, args.photos, args)))
    facts = serve_report.Facts(cpu=preflight.cpu_description(), model_dir=model_dir, photos=len(bodies),
                               requests=args.requests, warmup=args.warmup, image=args.image, env=env,
                               load=(load_before, os.getloadavg()))
    return serve_report.print_all(facts, baseline, ours, alone, layouts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(e.split("=", 1) for e in args.env)
    photos = select_photos(args.photos)
    if not photos:
        raise SystemExit(f"bench/serve: no .jpg photos under {args.photos}: set DOGBREED_TEST_DATA or pass --photos")
    models = str(args.model_dir) if args.model_dir else ", ".join(args.archs) + " trained for it (build/bench/)"
    print(f"bench/serve: {args.image} against the seed-style server (bench/baseline: MMS + eager PyTorch, built "
          f"from {args.train_image}; ResNets only) and against the whole request in-process; models {models}; "
          f"{len(photos)} photos, {args.requests} requests per concurrency {args.concurrency}"
          f"{', with --explain' if args.explain else ''}; the client reaches each server at "
          f"{'a published loopback port (docker-proxy)' if args.published_port else 'its bridge address'}; "
          f"{preflight.cpu_description()}", flush=True)
    preflight.require_images("bench/serve", args.image, args.train_image)
    bodies = [p.read_bytes() for p in photos]
    dirs = model_dirs(args)
    if any(with_baseline(args, d) for d in dirs):
        servers.build_baseline(args.train_image)
    codes = []
    for model_dir in dirs:
        print(f"\n=== {serve_report.model_summary(model_dir)}", flush=True)
        codes.append(measure_model(args, model_dir, env, bodies))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
