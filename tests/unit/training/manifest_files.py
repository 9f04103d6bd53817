"""Ground Truth output manifests and built-in ``.lst`` files over images laid out as S3 would download them."""

from __future__ import annotations

import json
from pathlib import Path

BUCKET_PREFIX = "s3://labelled-bucket/dogs/images/"


def ground_truth_line(ref: str, label, name: str | None = "", attribute: str = "breed", class_map=None) -> str:
    """One output manifest line as a Ground Truth image classification job writes it."""
    metadata: dict = {"confidence": 0.93, "type": "groundtruth/image-classification", "job-name": "labeling-job/dogs",
                      "human-annotated": "yes", "creation-date": "2026-11-30T10:00:00.000000"}
    if class_map is not None:
        metadata["class-map"] = class_map
    elif name is not None:
        metadata["class-name"] = name
    return json.dumps({"source-ref": ref, attribute: label, f"{attribute}-metadata": metadata})


def write_ground_truth(channel: Path, photos: list[tuple[Path, int, str]], name: str = "output.manifest") -> Path:
    """``channel/<label>/<file>`` for each photo, and the manifest naming them by S3 URI."""
    lines = []
    for path, label, class_name in photos:
        key = f"{label}/{path.name}"
        (channel / key).parent.mkdir(parents=True, exist_ok=True)
        (channel / key).write_bytes(path.read_bytes())
        lines.append(ground_truth_line(BUCKET_PREFIX + key, label, class_name))
    manifest = channel / name
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
