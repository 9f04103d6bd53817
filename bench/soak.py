#!/usr/bin/env python3
"""Soak: four clients mixing real photos and bad payloads against one serving container for five minutes.

    bench/soak [--model-dir DIR] [--seconds 300] [--image dogbreed-serve:latest] [--photos DIR]

Every photo (JPEG, and PNG made from one at start) must be answered 200 with one of the
model's breeds; every bad payload 4xx with a JSON ``{"error": ...}`` and its kind's exact
status; no request may fail to connect; and the container's anonymous memory must stay flat
after warm-up (the first fifth of the run). Prints the requests of each kind, the memory
samples and their growth, then PASS or FAIL with the reasons, and exits 1 on a failure; the
last line is a JSON object. It was a container test; it left CI for its five minutes.
Without ``--model-dir`` the pretrained EfficientNet-Lite0 recipe is trained for it by the
training image (bench/serve_archs's model, kept under build/bench/). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import preflight
import pytest
import requests
import serve
import serve_archs
import serve_model
from PIL import Image

sys.path.insert(0, str(serve_model.REPO))  # the container tests' helpers, imported rather than copied
from tests.docker.conftest import docker
from tests.docker.serve_container import Container

PROGRAM = "bench/soak"
CLIENTS = 4
PAYLOAD_MB = 1  # small, so the over-the-limit body stays cheap to send thousands of times
WARMUP_FRACTION = 0.2  # 60 s of 300: workers loaded, allocator arenas and the JVM heap grown
SAMPLE_EVERY_S = 10
# Growth of the container's anonymous memory allowed after warm-up. A healthy server moves
# by a few MB here (allocator arenas, the JVM's young generation; 2-4 MB measured on two
# cores). What a leak would add in the four post-warm-up minutes, at the 65-105 requests/s
# two cores manage with the test model (a quarter of them photos): a server keeping each
# request's body grows by the bytes sent, 2.5-4 GB (checked below to be over twice this
# margin; the over-the-limit bodies alone are 1 MiB each, an eighth of the requests); one
# keeping each decoded photo (~0.5 MB of pixels) or model input (224x224x3 float32,
# 0.6 MB) by 2 GB or more. A server keeping bodies, tried once, grew 1.1 GB in 48 s.
MEMORY_MARGIN_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Payload:
    """One kind of request and the status it must get."""

    kind: str
    bodies: tuple[bytes, ...]
    content_type: str | None
    status: int


@dataclass
class Tally:
    """What the clients saw, shared between their threads under ``lock``."""

    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    bytes_after_warmup: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def decompression_bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A well-formed PNG whose header claims ``width`` x ``height`` greyscale pixels (3.6 gigapixels)
    while its data holds four rows: the header alone must be enough to refuse it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def real_photos(folder: Path, per_class: int = 4) -> list[Path]:
    """The first ``per_class`` JPEGs of each class folder under ``folder``, in a fixed order."""
    photos = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos += sorted(class_dir.glob("*.jpg"))[:per_class]
    return photos


def payloads(photo_paths: list[Path]) -> list[Payload]:
    jpegs = tuple(p.read_bytes() for p in photo_paths)
    pngs = []
    for body in jpegs:
        buf = io.BytesIO()
        Image.open(io.BytesIO(body)).save(buf, "PNG")
        pngs.append(buf.getvalue())
    limit = PAYLOAD_MB * 1024 * 1024
    return [
        Payload("jpeg photo", jpegs, "image/jpeg", 200),
        Payload("png photo", tuple(pngs), "image/png", 200),
        Payload("empty body", (b"",), "image/jpeg", 400),
        Payload("truncated jpeg", tuple(b[: len(b) // 3] for b in jpegs), "image/jpeg", 400),
        Payload("json text as an image", (json.dumps({"image": "https://example.com/dog.jpg"}).encode(),),
                "image/jpeg", 400),
        Payload("wrong content type", jpegs, "text/csv", 415),
        Payload("over the payload limit", (jpegs[0] + b"\0" * limit,), "image/jpeg", 413),
        Payload("decompression bomb header", (decompression_bomb_png(),), "image/png", 413),
    ]


def check(payload: Payload, response: requests.Response, classes: list[str]) -> str | None:
    """None when ``response`` is what ``payload`` must get, else why not."""
    if response.status_code != payload.status:
        return f"status {response.status_code}, want {payload.status}: {response.text[:200]!r}"
    if not response.headers.get("Content-Type", "").startswith("application/json"):
        return f"Content-Type {response.headers.get('Content-Type')!r}: {response.text[:200]!r}"
    body = response.json()
    if payload.status == 200:
        return None if body.get("predicted_label") in classes else f"not a breed of the model: {body}"
    message = body.get("error") if isinstance(body, dict) else None
    return None if isinstance(message, str) and message else f"no error message: {body}"


def client(seed: int, url: str, kinds: list[Payload], classes: list[str], tally: Tally, warm_at: float,
           stop_at: float) -> None:
    """Send random payloads until ``stop_at``; record every answer (no retries)."""
    rng = random.Random(seed)
    session = requests.Session()
    while time.monotonic() < stop_at:
        payload = rng.choice(kinds)
        body = rng.choice(payload.bodies)
        headers = {"Content-Type": payload.content_type} if payload.content_type else {}
        sent_at = time.monotonic()
        try:
            response = session.post(url + "/invocations", data=body, headers=headers, timeout=60)
            problem = check(payload, response, classes)
        except (requests.RequestException, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        with tally.lock:
            tally.counts[payload.kind] += 1
            if sent_at >= warm_at:
                tally.bytes_after_warmup += len(body)
            if problem:
                tally.failures.append(f"{payload.kind}: {problem}")


def anonymous_memory(container: Container) -> int:
    """Bytes of anonymous memory charged to the container's cgroup: every process's heap, not page cache."""
    stat = docker("exec", container.name, "sh", "-c",
                  "cat /sys/fs/cgroup/memory.stat 2>/dev/null || cat /sys/fs/cgroup/memory/memory.stat",
                  timeout=60).stdout
    values = dict(line.split(" ", 1) for line in stat.splitlines() if " " in line)
    for key in ("anon", "total_rss"):  # cgroup v2, cgroup v1
        if key in values:
            return int(values[key])
    raise SystemExit(f"{PROGRAM}: memory.stat has neither anon (cgroup v2) nor total_rss (cgroup v1):\n{stat}")


def soak(image: str, model_dir: Path, kinds: list[Payload], classes: list[str], duration: float
         ) -> tuple[Tally, list[tuple[float, int]], str | None]:
    """Run the clients against one container for ``duration`` s; what they saw, the memory samples
    (seconds since the start, bytes), and the container's log tail if it stopped."""
    container = Container(image, model_dir, {"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(PAYLOAD_MB)})
    try:
        try:
            container.wait_for_ping()
        except pytest.fail.Exception as exc:  # the test helper fails a test; here it ends the program
            raise SystemExit(f"{PROGRAM}: the serving container did not start: {exc}") from None
        start = time.monotonic()
        warm_at, stop_at = start + duration * WARMUP_FRACTION, start + duration
        tally = Tally()
        threads = [threading.Thread(target=client, args=(i, container.url, kinds, classes, tally, warm_at, stop_at))
                   for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        samples: list[tuple[float, int]] = []
        while time.monotonic() < stop_at:
            samples.append((time.monotonic() - start, anonymous_memory(container)))
            time.sleep(max(0.0, min(SAMPLE_EVERY_S, stop_at - time.monotonic())))
        for thread in threads:
            thread.join(timeout=120)
        samples.append((time.monotonic() - start, anonymous_memory(container)))
        stopped = None if container.running() else container.logs()[-3000:]
        return tally, samples, stopped
    finally:
        container.remove()


def verdict(kinds: list[Payload], tally: Tally, samples: list[tuple[float, int]], duration: float,
            stopped: str | None) -> tuple[list[str], float | None]:
    """Every broken expectation (the test's assertions), and the memory growth after warm-up in bytes."""
    failures = []
    if stopped is not None:
        failures.append(f"the container stopped during the soak:\n{stopped}")
    if tally.failures:
        failures.append(f"{len(tally.failures)} wrong answers, e.g.:\n" + "\n".join(tally.failures[:20]))
    missing = [p.kind for p in kinds if tally.counts[p.kind] == 0]
    if missing:
        failures.append(f"never sent: {missing}")
    after = [m for t, m in samples if t >= duration * WARMUP_FRACTION]
    if len(after) < 3:
        failures.append(f"too few memory samples after warm-up: {samples}")
        return failures, None
    growth = max(after) - after[0]
    # The run must be busy enough that keeping every body would show far beyond the margin.
    if tally.bytes_after_warmup <= 2 * MEMORY_MARGIN_BYTES:
        failures.append(f"only {tally.bytes_after_warmup / 2**20:.0f} MB sent after warm-up: too idle to show a "
                        f"leak past the {MEMORY_MARGIN_BYTES / 2**20:.0f} MB margin")
    if growth > MEMORY_MARGIN_BYTES:
        failures.append(f"anonymous memory grew {growth / 2**20:.1f} MB after warm-up: {samples}")
    return failures, growth


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path,
                        help="a trained model dir (default: train one, see bench/serve_archs.py)")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the clients send [%(default)s]")
    parser.add_argument("--image", default="dogbreed-serve:latest")
    parser.add_argument("--train-image", default="dogbreed-train:latest", help="trains the default model")
    parser.add_argument("--photos", type=Path, help="a folder of class folders of JPEGs (default: the 3-breed valid/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    photos_dir = args.photos or serve.DATA / "valid"
    model = args.model_dir or f"the EfficientNet-Lite0 recipe trained for it ({serve_archs.LITE0_TREE})"
    print(f"{PROGRAM}: {CLIENTS} clients of photos and bad payloads against {args.image} for {args.seconds:.0f} s; "
          f"every answer against its expected status, anonymous memory after warm-up against a "
          f"{MEMORY_MARGIN_BYTES / 2**20:.0f} MB margin; model {model}; {photos_dir}; {preflight.cpu_description()}",
          flush=True)
    preflight.require_photos(PROGRAM, photos_dir, splits=())
    preflight.require_images(PROGRAM, args.image)
    model_dir = args.model_dir or serve_model.ensure_model_dir(serve.DATA, args.train_image, serve_archs.LITE0_TREE,
                                                               serve_archs.LITE0_HYPERPARAMETERS)
    classes = json.loads((model_dir / "model.json").read_text())["classes"]
    kinds = payloads(real_photos(photos_dir))
    tally, samples, stopped = soak(args.image, model_dir, kinds, classes, args.seconds)

    total = sum(tally.counts.values())
    print(f"soak: {total} requests in {args.seconds:.0f} s ({total / args.seconds:.1f}/s) from {CLIENTS} clients")
    for payload in kinds:
        print(f"  {payload.kind:<28} {tally.counts[payload.kind]:>6}  (want {payload.status})")
    print("  anonymous memory (MB) at s: " + ", ".join(f"{t:.0f}:{m / 2**20:.0f}" for t, m in samples))
    failures, growth = verdict(kinds, tally, samples, args.seconds, stopped)
    if growth is not None:
        print(f"  growth after warm-up: {growth / 2**20:.1f} MB (margin {MEMORY_MARGIN_BYTES / 2**20:.0f} MB); "
              f"bytes sent after warm-up: {tally.bytes_after_warmup / 2**20:.0f} MB")
    print("PASS" if not failures else "FAIL:\n" + "\n".join(f"- {f}" for f in failures))
    print(json.dumps({"passed": not failures, "seconds": args.seconds, "requests": total,
                      "counts": dict(tally.counts), "wrong_answers": len(tally.failures),
                      "memory_growth_bytes": growth, "bytes_after_warmup": tally.bytes_after_warmup}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
