#!/usr/bin/env python3
"""A whole hyperparameter search on cached features against one seed-style training job.

    bench/tune [--data DIR] [--arch resnet50] [--trials 20] [--epochs 5]

On the same data and CPUs: one ``epochs``-epoch seed-style job (every image through the
frozen network every epoch: what one tuning trial costs today), then
``python -m dogbreed.tune --trials N`` from scratch (no cache: feature extraction is
included), its trials ``epochs`` epochs each over lr and batch_size. Target: the whole
search takes <= 0.5x the single job. The last line is a JSON object with ``trials``,
``search_seconds``, ``baseline_seconds`` and ``ratio``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs  # noqa: E402
import preflight
import seed_style  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=jobs.DEFAULT_DATA)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"bench/tune: a {args.trials}-trial search on cached features (python -m dogbreed.tune, {args.epochs} "
          f"epochs a trial) against one seed-style {args.epochs}-epoch {args.arch} job, wall time; {args.data}; "
          f"{preflight.cpu_description()}", flush=True)
    preflight.require_photos("bench/tune", args.data)

    baseline = seed_style.run(args.data, args.arch, args.epochs)
    print(f"one seed-style {args.epochs}-epoch job: {baseline.seconds:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seconds, _ = jobs.timed("dogbreed.tune", [
            *jobs.channel_args(args.data, work), "--trials", str(args.trials), "--no-final", "--arch", args.arch,
            "--pretrained", "none", "--epochs", str(args.epochs), "--patience", "0"], work)
        summary = json.loads((work / "data" / "tune" / "trials.json").read_text())
    states = [t["state"] for t in summary["trials"]]
    ratio = seconds / baseline.seconds
    print(f"search of {len(states)} trials ({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned): "
          f"{seconds:.1f} s, features included")
    print(f"{os.cpu_count()} CPUs, {args.arch}: the search took {ratio:.2f}x one seed-style job (target <= 0.5x)")
    print(json.dumps({"arch": args.arch, "trials": len(states), "pruned": states.count("PRUNED"),
                      "search_seconds": seconds, "baseline_seconds": baseline.seconds, "ratio": ratio,
                      "best_valid_accuracy": (summary["best"] or {}).get("value")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
