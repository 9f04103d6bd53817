#!/usr/bin/env python3
"""Cold start of the serving container under SageMaker Serverless Inference's limits against a plain start.

    bench/serverless [--model-dir DIR] [--runs 3] [--image dogbreed-serve:latest]

Starts the same image with the same model, alternately, as a plain ``docker run`` (Docker's
defaults: no memory or CPU limit, a writable root, a worker per CPU) and as the serverless
container test does (``--read-only --tmpfs /tmp --memory 2g --cpus 1``, one worker, a 4 MB
payload limit), and times each from ``docker run`` to the first answered photo (/ping polled
every 0.1 s, then one real photo). Prints every start and the medians; the last line is a
JSON object. Without ``--model-dir`` the pretrained EfficientNet-Lite0 recipe is trained for
it by the training image (bench/serve_archs's model, kept under build/bench/). Not part of
the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import preflight
import serve
import serve_archs
import serve_model

sys.path.insert(0, str(serve_model.REPO))  # the container tests' helpers, imported rather than copied
from tests.docker.serve_container import SERVERLESS_DOCKER_ARGS, SERVERLESS_ENV, start_to_first_answer

PROGRAM = "bench/serverless"
# name -> (environment, docker run arguments)
STARTS = {
    "plain": ({}, ()),
    "serverless": (SERVERLESS_ENV, SERVERLESS_DOCKER_ARGS),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path,
                        help="a trained model dir (default: train one, see bench/serve_archs.py)")
    parser.add_argument("--runs", type=int, default=3, help="starts of each kind, alternating [%(default)s]")
    parser.add_argument("--image", default="dogbreed-serve:latest")
    parser.add_argument("--train-image", default="dogbreed-train:latest", help="trains the default model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = args.model_dir or f"the EfficientNet-Lite0 recipe trained for it ({serve_archs.LITE0_TREE})"
    serverless = " ".join(SERVERLESS_DOCKER_ARGS) + " " + " ".join(f"{k}={v}" for k, v in SERVERLESS_ENV.items())
    print(f"{PROGRAM}: cold start (docker run -> first answered photo) of {args.image}: serverless "
          f"({serverless}) against a plain docker run (no limits, image defaults); same image, same model "
          f"{model}; {args.runs} start(s) of each, alternating; {preflight.cpu_description()}", flush=True)
    preflight.require_photos(PROGRAM, serve.DATA / "valid", splits=())
    preflight.require_images(PROGRAM, args.image)
    model_dir = args.model_dir or serve_model.ensure_model_dir(serve.DATA, args.train_image, serve_archs.LITE0_TREE,
                                                               serve_archs.LITE0_HYPERPARAMETERS)
    photo = sorted((serve.DATA / "valid").glob("*/*.jpg"))[0].read_bytes()
    seconds: dict[str, list[float]] = {name: [] for name in STARTS}
    for run in range(args.runs):
        for name, (env, docker_args) in STARTS.items():
            container, took, answer = start_to_first_answer(args.image, model_dir.resolve(), photo, env, docker_args)
            container.remove()
            if answer.status_code != 200:
                raise SystemExit(f"{PROGRAM}: the {name} container answered {answer.status_code}: {answer.text}")
            seconds[name].append(took)
            print(f"  run {run + 1} {name:<10} {took:5.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"{name:<10} median {median:.1f} s  ({', '.join(f'{s:.1f}' for s in seconds[name])})")
    print(f"serverless / plain: {medians['serverless'] / medians['plain']:.2f}x")
    print(json.dumps({"image": args.image, "cpu": preflight.cpu_description(), "runs": args.runs,
                      "seconds": seconds, "median_s": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
