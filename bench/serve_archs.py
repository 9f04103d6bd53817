#!/usr/bin/env python3
"""The endpoint with EfficientNet-Lite0 against ResNet50: what each costs to serve.

    bench/serve_archs [--requests 100] [--concurrency 1 4] [--precisions fp32 int8]

Both models are trained by the training image on the 3-breed photos (kept under
build/bench/ and reused): the frozen recipe on the pretrained EfficientNet-Lite0, and
bench/serve's ResNet50 (random frozen backbone: its serving cost does not depend on its
weights). Each is served by ``dogbreed-serve`` with its default layout, once per precision
(``DOGBREED_PRECISION``), on the same CPUs, photos and client as bench/serve: the median
latency at concurrency 1, requests/s at concurrency 4, the model file's size, and the
predictions an hour that rate makes on this machine (an ml.m5.large has as many vCPUs, 2,
as the machines these figures were measured on; the CPU is printed). Prints what it
compares first and a JSON object last. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import preflight
import serve  # noqa: E402
import serve_model  # noqa: E402

LITE0_TREE, LITE0_HYPERPARAMETERS = serve_model.LITE0_TREE, serve_model.LITE0_HYPERPARAMETERS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/serve_archs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--image", default="dogbreed-serve:latest")
    parser.add_argument("--train-image", default="dogbreed-train:latest")
    args = parser.parse_args(argv)
    cpu = preflight.cpu_description()
    print(f"bench/serve_archs: {args.image} with efficientnet_lite0 against resnet50, precisions "
          f"{', '.join(args.precisions)}, concurrency {args.concurrency}, {args.requests} requests each; {cpu}",
          flush=True)
    preflight.require_photos("bench/serve_archs", serve.DATA)
    preflight.require_images("bench/serve_archs", args.image)
    models = {
        "efficientnet_lite0": serve_model.ensure_model_dir(serve.DATA, args.train_image, LITE0_TREE,
                                                           LITE0_HYPERPARAMETERS),
        "resnet50": serve_model.ensure_model_dir(serve.DATA, args.train_image),
    }
    bodies = [p.read_bytes() for p in serve.select_photos(serve.DATA / "valid")]
    rows = []
    for arch, model_dir in models.items():
        for precision in args.precisions:
            file = model_dir / ("model.onnx" if precision == "fp32" else "model.int8.onnx")
            run = serve.measure_server(args.image, model_dir, {"DOGBREED_PRECISION": precision}, bodies, args,
                                       serve.OURS_SETUP)
            c1, c4 = run.figures[min(args.concurrency)], run.figures[max(args.concurrency)]
            rows.append({"arch": arch, "precision": precision, "model_mb": file.stat().st_size / 1e6,
                         "c1_median_ms": c1.median_ms, "c4_rps": c4.rps, "predictions_per_hour": c4.rps * 3600})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{cpu}")
    print("| arch | precision | model MB | c1 median ms | c4 requests/s | predictions/hour |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['precision']} | {r['model_mb']:.1f} | {r['c1_median_ms']:.1f} | {r['c4_rps']:.1f} "
              f"| {r['predictions_per_hour']:,.0f} |")
    for precision in args.precisions:
        lite, resnet = (next(r for r in rows if r["arch"] == a and r["precision"] == precision) for a in models)
        c1 = lite["c1_median_ms"] / resnet["c1_median_ms"]
        print(f"{precision}: efficientnet_lite0 / resnet50: c1 median {c1:.2f}x, c4 requests/s "
              f"{lite['c4_rps'] / resnet['c4_rps']:.2f}x")
    print(json.dumps({"cpu": cpu, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
