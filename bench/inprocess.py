#!/usr/bin/env python3
"""The whole request in one process, in the serving image: bench/serve's in-process figure.

    docker run --rm --entrypoint python -v MODEL:/opt/ml/model:ro -v bench:/opt/bench:ro \\
        -v PHOTOS:/photos:ro [-e KEY=VALUE ...] dogbreed-serve:latest \\
        /opt/bench/inprocess.py --photos /photos --concurrency 1 4 --requests 100 --warmup 8

Builds one :class:`~dogbreed.serving.handler_service.HandlerService` per server worker,
each loaded through MMS's own ``Context`` as a worker loads it (so the same ONNX Runtime
build, model file, precision and session options, from the same variables the server
gets), and sends each photo's raw bytes through its ``handle(batch, context)``, the
function an MMS worker calls per request: the handler's decode, preprocessing, ONNX run
and JSON answer, nothing else. ``min(concurrency, workers)`` threads call, each keeping
one service as each worker process has one, so the server's figure divided by this one
is what nginx -> MMS -> the worker's socket cost. Also times the handler's stages one
photo at a time (decode, preprocess, run, answer + JSON). The last line printed is a
JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import drive, select_photos  # noqa: E402

JPEG = "image/jpeg"
# What an MMS worker stores for a POST with Content-Type: image/jpeg (mms/service.py's
# retrieve_data_for_inference): the request's headers, and the body part's content type.
REQUEST_HEADERS = {"Content-Type": JPEG, "Accept": "*/*", "body": {"content-type": JPEG}}


def served_precision(predictor) -> str:
    """The precision the server serves the model in, so the figure is for the same file.

    The image's ``model_fn`` chooses ``model.onnx`` or ``model.int8.onnx`` (by
    ``DOGBREED_PRECISION`` or the accuracy gate, ``choose_precision``) and its predictor
    names the choice in ``precision``; an image from before int8 has no such attribute
    and serves fp32. This is the one place that reads it.
    """
    return str(getattr(predictor, "precision", "fp32"))


def load_worker(settings, model_dir: str):
    """One worker's handler service and MMS context, loaded as MMS loads a worker's."""
    import mms
    from mms.context import Context

    from dogbreed.serving.handler_service import HandlerService

    service = HandlerService(settings)
    context = Context("model", model_dir, {}, 1, None, mms.__version__)
    service.initialize(context)
    return service, context


def request_caller(workers: list):
    """``call(body, i)`` for :func:`drive`: one request through a worker's ``handle``; each thread keeps one worker."""
    from mms.context import RequestProcessor

    local = threading.local()
    turn = itertools.count()

    def call(body: bytes, i: int) -> str:
        if not hasattr(local, "worker"):
            local.worker = workers[next(turn) % len(workers)]
        service, context = local.worker
        processor = RequestProcessor(dict(REQUEST_HEADERS))
        context.request_processor, context.request_ids = [processor], {0: f"request-{i}"}
        answer = service.handle([{"body": body}], context)
        if processor.get_response_status_code() != 200:
            raise RuntimeError(f"handle answered {processor.get_response_status_code()}: {answer[0][:300]}")
        return answer[0]

    return call


def stage_times(service, bodies: list[bytes]) -> dict[str, float]:
    """Median ms per photo of each stage of the handler's default functions, run one after another."""
    # The worker's own objects; _answer is classify's last step, logits -> the answer dict.
    handler, predictor = service._defaults, service.transformer.model  # noqa: SLF001 - see above
    top_k = predictor.resolve_top_k(None)
    samples: dict[str, list[float]] = {"decode": [], "preprocess": [], "run": [], "answer + json": []}
    for body in bodies:
        t0 = time.perf_counter()
        image = handler.default_input_fn(body, JPEG)
        t1 = time.perf_counter()
        tensor = predictor.preprocessing(image)
        t2 = time.perf_counter()
        logits = predictor.run(tensor[None])
        t3 = time.perf_counter()
        answer: Any = predictor._answer(logits[0], top_k)  # noqa: SLF001 - see above
        handler.default_output_fn(answer, "application/json")
        t4 = time.perf_counter()
        for name, ms in zip(samples, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            samples[name].append(ms * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inprocess.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", required=True)
    parser.add_argument("--warmup", type=int, required=True)
    args = parser.parse_args(argv)

    from dogbreed.serving.environment import ServingEnvironment

    env = ServingEnvironment.from_env()
    workers = [load_worker(env, str(env.model_dir)) for _ in range(env.workers)]
    bodies = [p.read_bytes() for p in select_photos(args.photos)]
    call = request_caller(workers)
    json.loads(call(bodies[0], 0))  # the answer is the server's JSON
    stages = stage_times(workers[0][0], bodies)

    results = {}
    for c in args.concurrency:
        threads = min(c, env.workers)
        drive(call, bodies, threads, args.warmup)
        results[c] = asdict(drive(call, bodies, threads, args.requests))
    print(json.dumps({"precision": served_precision(workers[0][0].transformer.model), "workers": env.workers,
                      "ort_threads": env.ort_threads, "cpus": env.cpus, "stages_ms": stages, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
