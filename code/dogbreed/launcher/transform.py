"""Batch transform: every image under an input prefix through the serving image, one JSON line each.

:func:`start` creates a SageMaker Model (serving image + ``model.tar.gz``, named like the job)
and a transform job over an ``S3Prefix`` of images, one image per request (``SplitType``
None, ``BatchStrategy`` SingleRecord), Accept ``application/json``. SageMaker writes
``<key>.out`` under the output prefix for each image; :func:`attach` waits for the job and
gathers them into ``predictions.jsonl`` (:mod:`dogbreed.launcher.predictions`).
:func:`run_local` runs the same request through the SDK's ``LocalSession`` on this machine.

What the request sets, and what it leaves to the container's ``GET /execution-parameters``:

* ``MaxPayloadInMB`` (``--max-payload-mb``) and the container's own limit,
  ``SAGEMAKER_MAX_PAYLOAD_IN_MB``, are set to the same value: an image SageMaker sends is one
  the endpoint accepts.
* ``MaxConcurrentTransforms`` is left out unless ``--max-concurrent-transforms`` is given:
  SageMaker then asks the container, which answers its worker count (one per vCPU). When
  given, ``SAGEMAKER_MODEL_SERVER_WORKERS`` is set to it: one request per worker.
* With ``--explain``, ``DOGBREED_EXPLAIN=cam``: batch transform sends no per-record headers,
  so the container's default is how each answer gets its class activation map (an
  ``explanation`` with its box and grid, kept whole in ``predictions.jsonl``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from sagemaker.core import shapes
from sagemaker.core.utils.utils import serialize

from dogbreed.launcher import explanations, hosting, predictions, sagemaker_conventions, validation
from dogbreed.launcher.container_settings import DEFAULT_MAX_PAYLOAD_MB, MAX_PAYLOAD_ENV, WORKERS_ENV
from dogbreed.launcher.validation import LauncherError

DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
BASE_NAME = "dogbreed-transform"
# One Content-Type goes with every request of a job. The serving image reads the format from
# the bytes (PIL), so any of these works for JPEG and PNG alike; application/x-image, what
# SageMaker's built-in image algorithms use, says "an image" without naming one.
CONTENT_TYPES = ("application/x-image", "image/jpeg", "image/png")
ACCEPT = "application/json"
MAX_PAYLOAD_LIMIT_MB = 100  # CreateTransformJob's maximum MaxPayloadInMB
BATCH_STRATEGY = "SingleRecord"  # what /execution-parameters calls SINGLE_RECORD
ENDED = ("Completed", "Failed", "Stopped")
POLL_SECONDS = 30
LOG_GROUP = "/aws/sagemaker/TransformJobs"


@dataclass
class TransformSpec:
    """One transform job. ``input``/``output`` are ``s3://`` prefixes, or directories with ``local``.

    ``model_data`` (``--model``) is a training job name or ``s3://.../model.tar.gz``; with
    ``local`` a local ``model.tar.gz``.
    """

    image: str
    model_data: str
    input: str
    output: str
    role: str | None = None
    job_name: str = ""  # empty: a unique one is made
    instance_type: str | None = None
    instance_count: int = 1
    max_payload_mb: int = DEFAULT_MAX_PAYLOAD_MB
    max_concurrent_transforms: int | None = None
    content_type: str = CONTENT_TYPES[0]
    local: bool = False
    explain: bool = False

    def __post_init__(self) -> None:
        if not self.image:
            raise LauncherError("no serving image: pass --image or set SERVE_IMAGE_URI")
        self.instance_type = validation.instance_type(
            self.instance_type or ("local" if self.local else DEFAULT_INSTANCE_TYPE), local=self.local
        )
        validation.count(self.instance_count, "--instance-count")
        if not 1 <= self.max_payload_mb <= MAX_PAYLOAD_LIMIT_MB:
            raise LauncherError(
                f"--max-payload-mb must be between 1 and {MAX_PAYLOAD_LIMIT_MB} "
                f"(SageMaker's limit), not {self.max_payload_mb}"
            )
        if self.max_concurrent_transforms is not None:
            validation.count(self.max_concurrent_transforms, "--max-concurrent-transforms")
        if self.content_type not in CONTENT_TYPES:
            raise LauncherError(
                f"--content-type {self.content_type!r}: the serving image takes {', '.join(CONTENT_TYPES)}"
            )
        self.job_name = validation.resource_name(
            self.job_name or sagemaker_conventions.unique_name(BASE_NAME), "--job-name"
        )
        self.model_data = validation.model_data(self.model_data, local=self.local)
        if self.local:
            if self.instance_count != 1:
                raise LauncherError("transform --local runs one container: --instance-count must be 1")
            self.input = validation.local_dir(self.input, "--input")
            output = self.output[len("file://") :] if self.output.startswith("file://") else self.output
            self.output = str(Path(output).expanduser().resolve())
            if Path(self.output).exists() and not Path(self.output).is_dir():
                raise LauncherError(f"--output {self.output!r} is a file, not a directory")
        else:
            self.image = validation.ecr_image(self.image, "serving image")
            self.role = validation.role_arn(self.role)
            self.input = validation.s3_uri(self.input, "--input")
            self.output = validation.s3_uri(self.output, "--output")
        if f"{self.output}/".startswith(f"{self.input}/"):
            raise LauncherError(
                f"--output {self.output!r} is inside --input {self.input!r}: "
                "the job's output would be read as images by the next one; pick a prefix outside it"
            )


def container_environment(spec: TransformSpec) -> dict[str, str]:
    """The job's ``Environment``: the container's limits made equal to the job's, and its default map."""
    environment = {MAX_PAYLOAD_ENV: str(spec.max_payload_mb)}
    if spec.max_concurrent_transforms is not None:
        environment[WORKERS_ENV] = str(spec.max_concurrent_transforms)
    if spec.explain:
        environment[explanations.ENV] = explanations.METHOD
    return environment


def asks_for_maps(environment: dict[str, str] | None) -> bool:
    """Whether a job with this ``Environment`` asked each answer for a class activation map."""
    return (environment or {}).get(explanations.ENV) == explanations.METHOD


def transform_job_request(spec: TransformSpec, input_uri: str, output_uri: str) -> dict[str, Any]:
    """``CreateTransformJob``'s parameters: each object under ``input_uri`` is one request."""
    request: dict[str, Any] = {
        "TransformJobName": spec.job_name,
        "ModelName": spec.job_name,
        "BatchStrategy": BATCH_STRATEGY,
        "MaxPayloadInMB": spec.max_payload_mb,
        "Environment": container_environment(spec),
        "TransformInput": shapes.TransformInput(
            data_source=shapes.TransformDataSource(
                s3_data_source=shapes.TransformS3DataSource(s3_data_type="S3Prefix", s3_uri=input_uri)
            ),
            content_type=spec.content_type,
            compression_type="None",
            split_type="None",  # one object, one request: an image cannot be cut into records
        ),
        "TransformOutput": shapes.TransformOutput(s3_output_path=output_uri, accept=ACCEPT, assemble_with="None"),
        "TransformResources": shapes.TransformResources(
            instance_type=spec.instance_type, instance_count=spec.instance_count
        ),
    }
    if spec.max_concurrent_transforms is not None:
        request["MaxConcurrentTransforms"] = spec.max_concurrent_transforms
    return serialize(request)


@dataclass(frozen=True)
class Outcome:
    """How a transform job ended, and its gathered predictions."""

    job_name: str
    status: str
    failure_reason: str | None
    summary: predictions.Summary

    @property
    def ok(self) -> bool:
        return self.status == "Completed" and not self.summary.failed


def _holds_objects(store: predictions.S3Store, uri: str, flag: str) -> bool:
    """Whether the folder ``uri`` holds an object; a missing bucket is the user's to fix."""
    try:
        return next(store.objects(uri), None) is not None
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchBucket":
            raise LauncherError(f"{flag} {uri}/: no such bucket") from exc
        raise


def start(spec: TransformSpec, boto_session) -> None:
    """Create the model and the transform job (both named ``spec.job_name``); returns at once.

    First, without creating anything: the image must be in the session's region, ``--input``
    must hold objects and ``--output`` none (an earlier run's ``.out`` files would pass for
    this one's), and a training job name in ``--model`` becomes its model.tar.gz.
    """
    if validation.ecr_region(spec.image) != boto_session.region_name:
        raise LauncherError(
            f"the image is in {validation.ecr_region(spec.image)}, the job would run in "
            f"{boto_session.region_name}: SageMaker needs the image in the job's region"
        )
    store = predictions.S3Store(boto_session.client("s3"), spec.input, spec.output)
    if not _holds_objects(store, spec.input, "--input"):
        raise LauncherError(f"--input {spec.input}/ holds no objects")
    if _holds_objects(store, spec.output, "--output"):
        raise LauncherError(f"--output {spec.output}/ already holds objects (an earlier run's?): pick an empty prefix")
    model_data = hosting.model_artifacts(spec.model_data, boto_session)
    client = boto_session.client("sagemaker")
    client.create_model(
        **serialize(
            {
                "ModelName": spec.job_name,
                "PrimaryContainer": shapes.ContainerDefinition(image=spec.image, model_data_url=model_data),
                "ExecutionRoleArn": spec.role,
            }
        )
    )
    # A trailing slash: the prefix is a folder (s3://b/in/ does not take s3://b/in-2/x.jpg).
    client.create_transform_job(**transform_job_request(spec, f"{spec.input}/", spec.output))


def wait(
    job_name: str, boto_session, poll_seconds: float = POLL_SECONDS, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Poll ``DescribeTransformJob`` until the job ends; echoes each new status. Returns the description."""
    client = boto_session.client("sagemaker")
    last = None
    while True:
        job = client.describe_transform_job(TransformJobName=job_name)
        status = job["TransformJobStatus"]
        if status != last:
            echo(f"transform job {job_name}: {status}")
            last = status
        if status in ENDED:
            return job
        time.sleep(poll_seconds)


def _missing_reason(job: dict[str, Any]) -> str:
    """Why an image has no ``.out``, from how the job ended."""
    status, name = job["TransformJobStatus"], job["TransformJobName"]
    if status == "Failed":
        return f"no output: batch transform failed on this image (the job's log: {LOG_GROUP}, streams {name}/...)"
    if status == "Stopped":
        return "no output: the job was stopped before this image"
    return "no output, though the job Completed"


def attach(job_name: str, boto_session, poll_seconds: float = POLL_SECONDS) -> Outcome:
    """Wait for a transform job started by :func:`start`, then gather its ``.out`` files."""
    validation.resource_name(job_name, "--attach (a transform job's name)")
    job = wait(job_name, boto_session, poll_seconds)
    source = job["TransformInput"]["DataSource"]["S3DataSource"]
    if source["S3DataType"] != "S3Prefix":
        raise LauncherError(f"transform job {job_name} reads a {source['S3DataType']}, not an S3 prefix of images")
    store = predictions.S3Store(boto_session.client("s3"), source["S3Uri"], job["TransformOutput"]["S3OutputPath"])
    # Read from the job, not a flag: --attach checks the maps a job started earlier asked for.
    summary = predictions.gather(store, _missing_reason(job), explain=asks_for_maps(job.get("Environment")))
    return Outcome(job_name, job["TransformJobStatus"], job.get("FailureReason"), summary)
