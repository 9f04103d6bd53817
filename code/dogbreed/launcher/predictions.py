"""``predictions.jsonl``: a transform job's ``<key>.out`` files gathered into one JSON Lines file.

Batch transform sends each object ``<input>/<key>`` to the serving image and writes its answer
to ``<output>/<key>.out``; for an image it fails on it writes nothing. :func:`gather` lists the
inputs, reads each one's ``.out`` and writes ``<output>/predictions.jsonl``: one line per input,
sorted by key, ``{"key": KEY, ...the endpoint's answer...}`` or, for an image without a
prediction, ``{"key": KEY, "error": REASON}``. ``KEY`` is the path relative to the input prefix.
The answer is kept whole: a job that asked for class activation maps (``transform --explain``)
has each image's ``explanation`` (its box and grid) in its line, and an answer without one
is a failure there.
A :class:`Store` hides where the files are: S3 (:class:`S3Store`) or this machine (:class:`LocalStore`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from dogbreed.launcher import explanations

FILE_NAME = "predictions.jsonl"
SUFFIX = ".out"  # what batch transform appends to an input's key
CONTENT_TYPE = "application/jsonlines"
READERS = 16  # concurrent GetObject calls: one .out is a few hundred bytes, the latency dominates


@dataclass(frozen=True)
class Prediction:
    """One input image: the endpoint's JSON answer, or why there is none."""

    key: str
    answer: Any = None
    error: str | None = None

    def to_json(self) -> str:
        """The image's line: ``key`` first, then the answer's fields (or ``error``)."""
        if self.error is not None:
            record = {"key": self.key, "error": self.error}
        elif isinstance(self.answer, dict) and "key" not in self.answer:
            record = {"key": self.key, **self.answer}
        else:  # a code/inference.py may answer something else than our object: kept whole
            record = {"key": self.key, "output": self.answer}
        return json.dumps(record, ensure_ascii=False)


@dataclass
class Summary:
    """What :func:`gather` wrote: where, one :class:`Prediction` per input, and stray ``.out`` files."""

    location: str
    predictions: list[Prediction]
    unmatched: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Prediction]:
        return [p for p in self.predictions if p.error is not None]

    def report(self, limit: int = 20) -> list[str]:
        """Lines for the terminal: the count, then each failure (the first ``limit``)."""
        failed = self.failed
        count = len(self.predictions)
        lines = [
            f"predictions: {self.location} ({count} image{'' if count == 1 else 's'}: "
            f"{len(self.predictions) - len(failed)} predicted, {len(failed)} failed)"
        ]
        lines += [f"  failed: {p.key}: {p.error}" for p in failed[:limit]]
        if len(failed) > limit:
            lines.append(f'  ... and {len(failed) - limit} more (lines with "error" in {FILE_NAME})')
        if self.unmatched:
            lines.append(f"  {len(self.unmatched)} {SUFFIX} file(s) match no input, e.g. {self.unmatched[0]}")
        return lines


class Store(Protocol):
    """The input images and the output files of one transform job; keys are relative paths."""

    @property
    def location(self) -> str:
        """The output prefix or directory, for messages."""
        ...

    def input_keys(self) -> list[str]: ...

    def output_keys(self) -> set[str]: ...

    def read_output(self, key: str) -> bytes: ...

    def write_output(self, key: str, data: bytes) -> str: ...


def parse(key: str, body: bytes, explain: bool = False) -> Prediction:
    """One ``.out`` file: the endpoint's JSON answer; its ``{"error": ...}`` or non-JSON is a failure,
    and with ``explain`` so is an answer without an ``explanation`` object."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except ValueError:  # not UTF-8 (UnicodeDecodeError) or not JSON
        return Prediction(key, error=f"the output is not JSON: {body[:200]!r}")
    # Only the SDK's local mode writes an error answer: it does not look at the status.
    if isinstance(answer, dict) and "error" in answer and "predicted_label" not in answer:
        return Prediction(key, error=f"the endpoint answered: {answer['error']}")
    if explain and not explanations.has_explanation(answer):
        # A serving image that ignores DOGBREED_EXPLAIN answers without a map: not what was asked.
        return Prediction(key, error=f"the answer has no {explanations.KEY!r} ({explanations.WHY_MISSING})")
    return Prediction(key, answer=answer)


def gather(store: Store, missing: str, reasons: Mapping[str, str] | None = None, explain: bool = False) -> Summary:
    """Read every input's ``.out``, write ``predictions.jsonl`` beside them; returns the :class:`Summary`.

    An input without ``.out`` gets ``reasons[key]`` when given, else ``missing``. With
    ``explain`` (the job asked for maps) each answer must carry its ``explanation``.
    """
    reasons = reasons or {}
    keys = sorted(store.input_keys())
    outputs = store.output_keys()
    present = [k for k in keys if k + SUFFIX in outputs]
    with ThreadPoolExecutor(READERS) as pool:
        bodies = dict(zip(present, pool.map(lambda k: store.read_output(k + SUFFIX), present), strict=True))
    predictions = [
        parse(k, bodies[k], explain) if k in bodies else Prediction(k, error=reasons.get(k, missing)) for k in keys
    ]
    text = "".join(p.to_json() + "\n" for p in predictions)
    location = store.write_output(FILE_NAME, text.encode("utf-8"))
    unmatched = sorted(outputs - {k + SUFFIX for k in keys})
    return Summary(location, predictions, unmatched)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.strip("/")


@dataclass
class S3Store:
    """Inputs under ``input`` (an ``s3://`` prefix, taken as a folder) and outputs under ``output``."""

    client: Any  # boto3 S3 client
    input: str
    output: str

    @property
    def location(self) -> str:
        return self.output.rstrip("/")

    def objects(self, uri: str) -> Iterator[tuple[str, int]]:
        """(key relative to the folder ``uri``, size) of every object under it; folder markers skipped."""
        bucket, prefix = split_s3(uri)
        prefix = f"{prefix}/" if prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    yield item["Key"][len(prefix) :], item["Size"]

    def input_keys(self) -> list[str]:
        return [key for key, _ in self.objects(self.input)]

    def output_keys(self) -> set[str]:
        return {key for key, _ in self.objects(self.output) if key.endswith(SUFFIX)}

    def _object(self, key: str) -> tuple[str, str]:
        bucket, prefix = split_s3(self.output)
        return bucket, f"{prefix}/{key}" if prefix else key

    def read_output(self, key: str) -> bytes:
        bucket, name = self._object(key)
        return self.client.get_object(Bucket=bucket, Key=name)["Body"].read()

    def write_output(self, key: str, data: bytes) -> str:
        bucket, name = self._object(key)
        self.client.put_object(Bucket=bucket, Key=name, Body=data, ContentType=CONTENT_TYPE)
        return f"s3://{bucket}/{name}"


@dataclass
class LocalStore:
    """Inputs under the directory ``input`` (at any depth) and outputs under ``output``."""

    input: Path
    output: Path

    @property
    def location(self) -> str:
        return str(self.output)

    @staticmethod
    def files(root: Path) -> Iterator[str]:
        for path in root.rglob("*"):
            if path.is_file():
                yield path.relative_to(root).as_posix()

    def input_keys(self) -> list[str]:
        return list(self.files(self.input))

    def output_keys(self) -> set[str]:
        return {key for key in self.files(self.output) if key.endswith(SUFFIX)} if self.output.is_dir() else set()

    def read_output(self, key: str) -> bytes:
        return (self.output / key).read_bytes()

    def write_output(self, key: str, data: bytes) -> str:
        path = self.output / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)
