#!/usr/bin/env python3
"""Real transfer learning on the 3-breed photos: the pretrained EfficientNet-Lite0, measured.

    bench/transfer [--data DIR] [--arch efficientnet_lite0] [--trials 20] [--skip-search] [--work DIR]

On the same data and CPUs, each a ``python -m dogbreed.training`` job (or the search) as
a user runs it:

1. the course's recipe: frozen trunk, new head, cached features, default hyperparameters
   (target: test accuracy >= 95%), its int8 model against fp32 on the valid *and* test
   photos (target: within 0.5 points), and the Debugger rules' verdicts on it;
2. the same job with ``int8_calibration=minmax`` instead of the architecture's percentile
   (the features come from 1.'s cache);
3. a partial unfreeze (``--partial``, default ``blocks.5``: the last stage, the head
   convolution and the head train);
4. a ``--trials``-trial local search on 1.'s features: the best trial's valid accuracy
   against the default hyperparameters'.

Prints what it compares first, the CPU, a table, and a JSON object last. Not part of the
test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs  # noqa: E402
import preflight

sys.path.insert(0, str(jobs.REPO / "code"))
from dogbreed.artifacts import INT8_ONNX_FILE, ONNX_FILE, ModelMetadata  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name and its widest vector extensions (which int8 and fp32 kernels use)."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    vector = [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2") if f in flags]
    return f"{name or platform.processor() or 'unknown CPU'} ({', '.join(vector[:2]) or 'no AVX2'})"


def onnx_top1(model_dir: Path, data: Path) -> dict[str, dict[str, float]]:
    """fp32 and int8 top-1 with ONNX Runtime on every valid and test photo, and how often they agree."""
    from dogbreed.serving.predictor import Predictor

    meta = ModelMetadata.load(model_dir)
    out: dict[str, dict[str, float]] = {}
    for split in ("valid", "test"):
        photos = sorted((data / split).glob("*/*.jpg"))
        labels = np.array([meta.class_dirs.index(p.parent.name) for p in photos])
        predictions = {}
        for precision, file in (("fp32", ONNX_FILE), ("int8", INT8_ONNX_FILE)):
            if not (model_dir / file).is_file():
                continue
            predictor = Predictor(model_dir, precision=precision)
            inputs = np.stack([predictor.preprocess(p.read_bytes()) for p in photos])
            predictions[precision] = predictor.run(inputs).argmax(1)
        out[split] = {precision: float((p == labels).mean()) for precision, p in predictions.items()}
        if len(predictions) == 2:
            out[split]["agreement"] = float((predictions["fp32"] == predictions["int8"]).mean())
        out[split]["images"] = len(photos)
    return out


def verdicts(work: Path) -> dict[str, str]:
    """Each Debugger rule's status in the job's report.json."""
    rules = json.loads((work / "data" / "report.json").read_text())["rules"]
    return {r["name"]: ("IssuesFound" if r["triggered"] else "NoIssuesFound") if r["evaluated"] else "NotEvaluated"
            for r in rules}


def job(data: Path, work: Path, arch: str, *hyperparameters: str) -> dict:
    """One training job; its wall time, final metrics, feature sources and rule verdicts."""
    seconds, _ = jobs.timed("dogbreed.training", [*jobs.channel_args(data, work), "--arch", arch,
                                                  "--pretrained", "imagenet", *hyperparameters], work)
    metrics = jobs.metrics(work)
    return {"seconds": seconds, "final": metrics["final"], "epochs": len(metrics["history"]),
            "features": metrics.get("features", {}), "rules": verdicts(work)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/transfer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=jobs.DEFAULT_DATA)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--partial", default="blocks.5", help="freeze= for the partial unfreeze")
    parser.add_argument("--partial-epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--work", type=Path, help="keep the jobs' folders here (their models, reports and "
                                                  "class activation maps); default: a temporary folder")
    args = parser.parse_args(argv)
    print(f"bench/transfer: {args.arch} pretrained on ImageNet, on {args.data}; {cpu_name()}, "
          f"{len(os.sched_getaffinity(0))} CPUs. Compares: the frozen recipe (test accuracy, int8 "
          f"against fp32 on valid and test, rules), minmax calibration, freeze={args.partial}, and a "
          f"{args.trials}-trial search against the default hyperparameters.", flush=True)
    preflight.require_photos("bench/transfer", args.data, splits=("train", "valid", "test"))
    results: dict = {"cpu": cpu_name(), "arch": args.arch}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.work or scratch
        frozen = Path(tmp) / "frozen"
        results["frozen"] = job(args.data, frozen, args.arch)
        results["frozen"]["onnx"] = onnx_top1(frozen / "model", args.data)
        print("frozen recipe:", json.dumps(results["frozen"]), flush=True)
        results["minmax"] = job(args.data, frozen, args.arch, "--int8_calibration", "minmax")
        results["minmax"]["onnx"] = onnx_top1(frozen / "model", args.data)
        print("minmax calibration:", json.dumps(results["minmax"]), flush=True)
        partial = Path(tmp) / "partial"
        results["partial"] = job(args.data, partial, args.arch, "--freeze", args.partial,
                                 "--epochs", str(args.partial_epochs), "--int8", "false")
        print(f"freeze={args.partial}:", json.dumps(results["partial"]), flush=True)
        if not args.skip_search:
            start = time.perf_counter()
            jobs.timed("dogbreed.tune", [*jobs.channel_args(args.data, frozen), "--trials", str(args.trials),
                                         "--no-final", "--arch", args.arch, "--pretrained", "imagenet"], frozen)
            summary = json.loads((frozen / "data" / "tune" / "trials.json").read_text())
            best = summary["best"] or {}
            results["search"] = {"seconds": time.perf_counter() - start, "trials": len(summary["trials"]),
                                 "best_valid_accuracy": best.get("value"), "best": best.get("params")}
            print("search:", json.dumps(results["search"]), flush=True)
    report(results)
    print(json.dumps(results))
    return 0


def report(results: dict) -> None:
    frozen, partial = results["frozen"], results["partial"]
    print(f"\n{results['arch']} on {results['cpu']}")
    print("| run | epochs | valid acc | test acc | wall s |")
    print("|---|---|---|---|---|")
    for name, run in (("frozen (course recipe)", frozen), ("partial unfreeze", partial)):
        final = run["final"]
        test = final.get("test_accuracy", float("nan"))
        print(f"| {name} | {run['epochs']} | {final['valid_accuracy']:.4f} | {test:.4f} | {run['seconds']:.0f} |")
    for name in ("frozen", "minmax"):
        onnx = results[name]["onnx"]
        for split in ("valid", "test"):
            s = onnx[split]
            print(f"{'default' if name == 'frozen' else name} calibration, {split} ({s['images']} photos): fp32 {s['fp32']:.4f}, int8 {s['int8']:.4f} "
                  f"({100 * (s['int8'] - s['fp32']):+.1f} points), agreement {s['agreement']:.4f}")
    print("rules on the frozen recipe:", ", ".join(f"{k}: {v}" for k, v in frozen["rules"].items()))
    if "search" in results:
        search = results["search"]
        print(f"search: best valid accuracy {search['best_valid_accuracy']} ({search['best']}) against "
              f"{frozen['final']['valid_accuracy']:.4f} with the defaults, {search['trials']} trials, "
              f"{search['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
