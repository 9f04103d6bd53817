#!/usr/bin/env python3
"""class_weights=none against class_weights=balanced, on the 3-breed photos made imbalanced.

    bench/imbalance [--data DIR] [--minority 003.Toy_poodle] [--keep 8] [--epochs 6] [--work DIR]

The train split keeps only the first ``--keep`` photos of the ``--minority`` breed (links, not
copies; valid and test stay whole). Two ``python -m dogbreed.training`` jobs on it, the frozen
pretrained EfficientNet-Lite0 on cached features, differing only in ``class_weights``: each
breed's test accuracy and the overall one. Prints what it compares first and a JSON object
last. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs
import preflight


def imbalanced(data: Path, out: Path, minority: str, keep: int) -> Path:
    """``out`` with links to every photo of ``data`` but the minority breed's training photos after ``keep``."""
    for split in ("train", "valid", "test"):
        for breed in sorted(p for p in (data / split).iterdir() if p.is_dir()):
            photos = sorted(p for p in breed.iterdir() if p.is_file())
            if split == "train" and breed.name == minority:
                photos = photos[:keep]
            (out / split / breed.name).mkdir(parents=True)
            for photo in photos:
                (out / split / breed.name / photo.name).symlink_to(photo.resolve())
    return out


def job(data: Path, work: Path, class_weights: str, epochs: int) -> dict:
    """One training job; its wall time, each breed's test accuracy and the overall figures."""
    args = [
        *jobs.channel_args(data, work),
        "--arch",
        "efficientnet_lite0",
        "--epochs",
        str(epochs),
        "--patience",
        "0",
        "--augment",
        "false",
        "--int8",
        "false",
        "--debug",
        "false",
        "--profile",
        "false",
        "--class_weights",
        class_weights,
    ]
    seconds, _ = jobs.timed("dogbreed.training", args, work)
    with open(work / "data" / "test" / "per_class_accuracy.csv") as f:
        per_class = {row["class"]: float(row["accuracy"]) for row in csv.DictReader(f)}
    final = jobs.metrics(work)["final"]
    return {"seconds": round(seconds, 1), "test_accuracy": final["test_accuracy"], "per_class": per_class}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/imbalance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=jobs.DEFAULT_DATA)
    parser.add_argument("--minority", default="003.Toy_poodle")
    parser.add_argument("--keep", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--work", type=Path, help="keep the jobs' folders here; default: a temporary folder")
    args = parser.parse_args(argv)
    print(
        f"bench/imbalance: class_weights=none against balanced, {args.minority} cut to {args.keep} training "
        f"photos, on {args.data}",
        flush=True,
    )
    preflight.require_photos("bench/imbalance", args.data, splits=("train", "valid", "test"))
    results: dict = {"minority": args.minority, "keep": args.keep}
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        data = imbalanced(args.data, work / "photos", args.minority, args.keep)
        for weights in ("none", "balanced"):
            results[weights] = job(data, work / weights, weights, args.epochs)
            print(f"class_weights={weights}:", json.dumps(results[weights]), flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
