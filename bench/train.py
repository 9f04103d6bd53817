#!/usr/bin/env python3
"""Training images/s of a frozen-backbone job: dogbreed's (cached features) against the seed-style loop.

    bench/train [--data DIR] [--arch resnet50] [--epochs 5] [--batch-size 32]

First the backbone pass itself, in the variants the job could use (contiguous or
channels_last memory, no_grad or inference_mode, and float16 autocast on CUDA), on the
same random batch; the job uses the fastest here (channels_last + inference_mode on the
CPUs measured so far). Then, on the same data and CPUs, one ``epochs``-epoch job each:
the seed-style loop (every image through the whole network every epoch) and
``python -m dogbreed.training`` (each image through the trunk once, per cached view).
images/s is training images x epochs over the job's whole wall time (data, every pass,
test, and for dogbreed the ONNX export and the report). Target: >= 2x. The last line
is a JSON object. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision import models

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs  # noqa: E402
import preflight
import seed_style  # noqa: E402


def backbone_variants(arch: str, batch_size: int, rounds: int = 2) -> dict[str, float]:
    """Images/s of the trunk's forward pass in each variant, alternating rounds."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = models.get_model(arch, weights=None).eval().to(device)
    model.fc = torch.nn.Identity()
    batch = torch.randn(batch_size, 3, 224, 224, device=device)
    variants = [("contiguous, no_grad", torch.contiguous_format, torch.no_grad, False),
                ("contiguous, inference_mode", torch.contiguous_format, torch.inference_mode, False),
                ("channels_last, inference_mode", torch.channels_last, torch.inference_mode, False)]
    if device.type == "cuda":
        variants.append(("channels_last, inference_mode, float16", torch.channels_last, torch.inference_mode, True))
    rates: dict[str, list[float]] = {name: [] for name, *_ in variants}
    for _ in range(rounds):
        for name, memory, mode, half in variants:
            model.to(memory_format=memory)
            x = batch.contiguous(memory_format=memory)
            with mode(), torch.autocast(device.type, dtype=torch.float16, enabled=half):
                model(x[:2])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(2):
                    model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                rates[name].append(2 * batch_size / (time.perf_counter() - start))
    return {name: max(values) for name, values in rates.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=jobs.DEFAULT_DATA)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    print(f"bench/train: {args.arch} frozen-backbone training images/s, python -m dogbreed.training (cached "
          f"features) against the seed-style loop (bench/seed_style.py), {args.epochs} epochs, batch_size "
          f"{args.batch_size}, after the backbone pass in each memory format and mode; {args.data}; "
          f"{preflight.cpu_description()}", flush=True)
    preflight.require_photos("bench/train", args.data)

    variants = backbone_variants(args.arch, args.batch_size)
    base = variants["contiguous, no_grad"]
    for name, rate in variants.items():
        print(f"backbone pass, {name}: {rate:.1f} images/s ({rate / base:.2f}x)", flush=True)

    baseline = seed_style.run(args.data, args.arch, args.epochs, args.batch_size)
    print(f"seed-style loop: {baseline.seconds:.1f} s, {baseline.images_per_sec:.1f} images/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seconds, _ = jobs.timed("dogbreed.training", [
            *jobs.channel_args(args.data, work), "--arch", args.arch, "--pretrained", "none", "--epochs",
            str(args.epochs), "--patience", "0", "--batch_size", str(args.batch_size)], work)
        features = jobs.metrics(work)["features"]
    ours = baseline.train_images * args.epochs / seconds
    ratio = ours / baseline.images_per_sec
    extraction = sum(f["seconds"] for f in features.values())
    print(f"dogbreed job (cached features): {seconds:.1f} s ({extraction:.1f} s computing features), "
          f"{ours:.1f} images/s")
    print(f"{os.cpu_count()} CPUs, {args.arch}, {args.epochs} epochs: {ratio:.2f}x the seed-style loop's images/s "
          f"(target >= 2x)")
    print(json.dumps({"arch": args.arch, "epochs": args.epochs, "baseline_images_per_sec": baseline.images_per_sec,
                      "images_per_sec": ours, "ratio": ratio, "baseline_seconds": baseline.seconds,
                      "seconds": seconds, "feature_seconds": extraction, "backbone_images_per_sec": variants}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
