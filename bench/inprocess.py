#!/usr/bin/env python3
"""The model alone, in the serving image: bench/serve's in-process ONNX Runtime figure.

    docker run --rm --entrypoint python -v MODEL:/opt/ml/model:ro -v bench:/opt/bench:ro \\
        -v PHOTOS:/photos:ro [-e KEY=VALUE ...] dogbreed-serve:latest \\
        /opt/bench/inprocess.py --photos /photos --concurrency 1 4 --requests 100 --warmup 8

Loads the model once per server worker with the image's own ``model_fn`` in the layout
:class:`ServingEnvironment` reads from the same variables the server gets (so the same
ONNX Runtime build, the same model file and precision, the same session options), and
runs the preprocessed photos through it from ``min(concurrency, workers)`` threads, each
with its own session as each worker process has one: the limit the endpoint approaches,
without HTTP, decoding or preprocessing. The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import drive, select_photos  # noqa: E402


def served_precision(predictor) -> str:
    """The precision the server serves the model in, so the figure is for the same file.

    The image's ``model_fn`` chooses ``model.onnx`` or ``model.int8.onnx`` (by
    ``DOGBREED_PRECISION`` or the accuracy gate, ``choose_precision``) and its predictor
    names the choice in ``precision``; an image from before int8 has no such attribute
    and serves fp32. This is the one place that reads it.
    """
    return str(getattr(predictor, "precision", "fp32"))


def session_caller(predictors: list):
    """``call(tensor, i)`` for :func:`drive`: each calling thread keeps one predictor, as a worker does."""
    local = threading.local()
    turn = itertools.count()

    def call(tensor, _i: int) -> None:
        if not hasattr(local, "predictor"):
            local.predictor = predictors[next(turn) % len(predictors)]
        local.predictor.run(tensor[None])

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inprocess.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", required=True)
    parser.add_argument("--warmup", type=int, required=True)
    args = parser.parse_args(argv)

    from dogbreed.serving.environment import ServingEnvironment
    from dogbreed.serving.inference_handler import InferenceHandler

    env = ServingEnvironment.from_env()
    handler = InferenceHandler(env)
    predictors = [handler.default_model_fn(env.model_dir) for _ in range(env.workers)]
    bodies = [p.read_bytes() for p in select_photos(args.photos)]
    start = time.perf_counter()
    tensors = [predictors[0].preprocess(b) for b in bodies]
    decode_ms = (time.perf_counter() - start) / len(bodies) * 1000

    call = session_caller(predictors)
    results = {}
    for c in args.concurrency:
        threads = min(c, env.workers)
        drive(call, tensors, threads, args.warmup)
        results[c] = asdict(drive(call, tensors, threads, args.requests))
    print(json.dumps({"precision": served_precision(predictors[0]), "workers": env.workers,
                      "ort_threads": env.ort_threads, "cpus": env.cpus, "decode_ms": decode_ms,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
