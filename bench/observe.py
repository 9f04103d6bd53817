#!/usr/bin/env python3
"""What the Debugger trial and the profile cost: training images/s with both on against both off.

    bench/observe [--data DIR] [--arch resnet18] [--epochs 2] [--rounds 2] [--hp KEY=VALUE ...]

Runs the training job (``python -m dogbreed.training``) on the same data and settings,
alternating ``debug=on profile=on`` (the default) with ``debug=off profile=off``, and
compares the mean training images/s of each job's epochs after the first (the first
epoch also pays for worker start-up and the file cache). Target: at most 5% slower.
Its last line is a JSON object. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import preflight

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DOGBREED_TEST_DATA", REPO.parent / "shared" / "data" / "dogs-3breeds"))


def one_job(data: Path, work: Path, observe: bool, extra: list[str]) -> float:
    """Mean images/s of the job's epochs after the first."""
    switch = "on" if observe else "off"
    args = [sys.executable, "-m", "dogbreed.training", "--train", str(data / "train"), "--valid", str(data / "valid"),
            "--test", str(work / "no-test"), "--model-dir", str(work / "model"), "--output-data-dir",
            str(work / "data"), "--checkpoint-dir", str(work / "checkpoints"), "--pretrained", "none",
            "--patience", "0", "--debug", switch, "--profile", switch, *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO / "code"), "DOGBREED_OPT_ML": str(work)}
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the job failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    history = json.loads((work / "data" / "metrics.json").read_text())["history"]
    return statistics.mean(h["images_per_sec"] for h in history[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/observe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--epochs", type=int, default=3, help="per job; the first epoch is not counted")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of jobs (on, off)")
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="another hyperparameter")
    args = parser.parse_args(argv)
    extra = ["--arch", args.arch, "--epochs", str(args.epochs)]
    for pair in args.hp:
        key, _, value = pair.partition("=")
        extra += [f"--{key}", value]
    print(f"bench/observe: training images/s of python -m dogbreed.training with debug=on profile=on against "
          f"debug=off profile=off, {args.arch}, {args.epochs} epochs, {args.rounds} rounds; {args.data}; "
          f"{preflight.cpu_description()}", flush=True)
    preflight.require_photos("bench/observe", args.data)

    rates: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                work = Path(tmp) / f"{name}-{round_}"
                rates[name].append(one_job(args.data, work, name == "on", extra))
                print(f"round {round_ + 1}: debug/profile {name:>3}: {rates[name][-1]:.1f} images/s", flush=True)
    on, off = statistics.mean(rates["on"]), statistics.mean(rates["off"])
    ratio = on / off
    print(f"{os.cpu_count()} CPUs, {args.arch}: on {on:.1f} images/s, off {off:.1f} images/s, ratio {ratio:.3f} "
          f"({(1 - ratio) * 100:+.1f}% slower; target <= 5%)")
    print(json.dumps({"arch": args.arch, "on_images_per_sec": on, "off_images_per_sec": off, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
