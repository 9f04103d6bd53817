"""Validation of everything a user types: image URIs, S3 URIs, instance types, names.

Each check raises :class:`LauncherError` with a sentence a user can act on, so that a
typo fails before any AWS resource is created. What SageMaker decides rather than the user
(where a job's output lands, unique names) is in :mod:`dogbreed.launcher.sagemaker_conventions`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse


class LauncherError(ValueError):
    """Bad input or state the user can fix; the CLI prints it without a traceback."""


_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z]{2}(-[a-z]+)+-\d)\.amazonaws\.com(\.cn)?"
    r"/(?P<repository>[a-z0-9]+(?:[._/-][a-z0-9]+)*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@sha256:[0-9a-f]{64})?$"
)
# Bucket naming rules: 3-63 characters, lower case, digits, dots and hyphens.
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# ml.<family>.<size>: ml.m5.large, ml.g4dn.xlarge, ml.p4d.24xlarge, ml.trn1.32xlarge.
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z][a-z0-9-]*\.(?:[0-9]*x?large|medium|small|metal|[0-9]+xlarge)$")
LOCAL_INSTANCE_TYPES = ("local", "local_gpu")
_ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
# Training jobs, models, endpoints and their configs: 1-63 alphanumerics and hyphens.
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


def _ecr_match(uri: str, what: str) -> re.Match[str]:
    match = _ECR_IMAGE.match(uri or "")
    if not match:
        raise LauncherError(
            f"{what} {uri!r} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>); "
            "SageMaker pulls only from ECR: push with scripts/build_and_push.sh and use the URI it prints"
        )
    return match


def ecr_image(uri: str, what: str = "image") -> str:
    """An ECR image URI: ``<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag]``.

    SageMaker pulls training and serving images from ECR only, so anything else (a
    Docker Hub name, a local tag, a registry on localhost) is refused here.
    """
    _ecr_match(uri, what)
    return uri


def ecr_region(uri: str) -> str:
    """The region of an ECR image URI (SageMaker needs the image in the job's region)."""
    return _ecr_match(uri, "image").group("region")


def s3_uri(uri: str, what: str) -> str:
    """``s3://bucket[/key]`` with a valid bucket name; returned without a trailing slash."""
    parsed = urlparse(uri or "")
    if parsed.scheme != "s3" or not _S3_BUCKET.match(parsed.netloc) or ".." in parsed.netloc:
        raise LauncherError(f"{what} {uri!r} is not an S3 URI like s3://my-bucket/dogbreed/train")
    return uri.rstrip("/")


def local_dir(uri: str, what: str) -> str:
    """A ``file://`` URI (or a plain path) of an existing local directory, as an absolute path.

    ModelTrainer's local mode takes plain paths (it refuses ``file://``)."""
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    if not path.is_dir():
        raise LauncherError(f"{what} {uri!r}: no such local directory")
    return str(path.resolve())


def model_data(value: str, local: bool = False) -> str:
    """``--model``: a training job name or ``s3://.../model.tar.gz``; with ``local`` a local
    ``model.tar.gz`` file (a path or ``file://``), returned as a ``file://`` URI."""
    if local:
        path = Path(value[len("file://") :] if value.startswith("file://") else value)
        if not path.is_file():
            raise LauncherError(f"--model {value!r}: no such local model.tar.gz")
        return f"file://{path.resolve()}"
    if value.startswith("s3://"):
        value = s3_uri(value, "--model")
        if not value.endswith(".tar.gz"):
            raise LauncherError(f"--model {value!r} must point at a model.tar.gz")
        return value
    return resource_name(value, "--model (a training job name or s3://.../model.tar.gz)")


def model_prefix(value: str) -> str:
    """``--multi-model``: the ``s3://bucket/prefix/`` a multi-model endpoint's models lie under, kept with its slash."""
    prefix = s3_uri(value, "--multi-model") + "/"
    if prefix.endswith(".tar.gz/"):
        raise LauncherError(
            f"--multi-model {value!r} is one model.tar.gz; name the S3 prefix the models lie under, "
            "like s3://my-bucket/dogbreed/models/"
        )
    return prefix


def target_model(value: str) -> str:
    """``--target-model``: a ``.tar.gz`` key relative to the endpoint's prefix, as InvokeEndpoint's TargetModel."""
    if not value.endswith(".tar.gz") or value.startswith("/") or "s3://" in value or len(value) > 1024:
        raise LauncherError(
            f"--target-model {value!r} must be a model.tar.gz's key under the endpoint's S3 prefix, "
            "like breeds-a.tar.gz"
        )
    return value


def instance_type(value: str, local: bool = False) -> str:
    """``ml.<family>.<size>``, or ``local``/``local_gpu`` in local mode."""
    if local:
        if value not in LOCAL_INSTANCE_TYPES:
            raise LauncherError(f"instance type {value!r}: local mode runs on 'local' or 'local_gpu'")
        return value
    if not _INSTANCE_TYPE.match(value or ""):
        raise LauncherError(
            f"instance type {value!r} is not a SageMaker instance type like ml.g4dn.xlarge or ml.m5.large"
        )
    return value


def role_arn(value: str | None) -> str:
    """An IAM role ARN (the SageMaker execution role)."""
    if not value:
        raise LauncherError(
            "no execution role: pass --role arn:aws:iam::<account>:role/<name> or set SAGEMAKER_ROLE_ARN"
        )
    if not _ROLE_ARN.match(value):
        raise LauncherError(f"role {value!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
    return value


def resource_name(value: str, what: str, max_length: int = 63) -> str:
    """A SageMaker resource name: letters, digits and hyphens, at most ``max_length``."""
    if not value or len(value) > max_length or not _NAME.match(value):
        raise LauncherError(
            f"{what} {value!r}: use 1-{max_length} letters, digits and hyphens, starting with a letter or digit"
        )
    return value


def count(value: int, what: str) -> int:
    """A count the user gave (instances, jobs): at least 1."""
    if value < 1:
        raise LauncherError(f"{what} must be at least 1, not {value}")
    return value


_SNS_TOPIC = re.compile(r"^arn:aws(-[a-z]+)*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")


def sns_topic(value: str, what: str) -> str:
    """An SNS topic ARN: ``arn:aws:sns:<region>:<account>:<name>``."""
    if not _SNS_TOPIC.match(value or ""):
        raise LauncherError(f"{what} {value!r} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)")
    return value
