"""Endpoints: deploy a trained model with the serving image, predict, delete.

:func:`deploy` creates a SageMaker Model (serving image + ``model.tar.gz``), an endpoint
config with one ``AllTraffic`` variant and an endpoint, of one of three kinds:

* real-time on instances (the default), with :class:`Autoscaling` target-tracking autoscaling
  on invocations per instance (:func:`enable_autoscaling`);
* :class:`Serverless`: the variant's ``ServerlessConfig`` instead of instances, the container
  with one worker and serverless' 4 MB payload limit;
* :class:`AsyncInference`: the config's ``AsyncInferenceConfig`` (answers go to S3), the
  container with async's 60-minute timeout and a payload limit that fits any image it decodes
  (:mod:`dogbreed.launcher.container_settings`); :mod:`dogbreed.launcher.async_predict` sends it images.

A real-time endpoint may be multi-model (``multi_model``): the container in ``Mode=MultiModel``
over an S3 prefix of model.tar.gz files, ``SAGEMAKER_MULTI_MODEL=true`` in its environment; each
request names its model (:func:`invoke`'s ``target_model``, InvokeEndpoint's ``TargetModel``).

:func:`invoke` and :func:`predict` send an image to an endpoint (an error answer becomes
:class:`EndpointError`), :func:`delete` removes it all. :class:`LocalEndpoint` serves the same
model with the serving image on this machine, through the SDK's ``LocalSession`` (no
autoscaling there).
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from sagemaker.core import shapes
from sagemaker.core.local import LocalSession
from sagemaker.core.utils.utils import serialize

from dogbreed.launcher import container_settings, sagemaker_conventions, validation
from dogbreed.launcher.validation import LauncherError

VARIANT = "AllTraffic"
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
# What the serving image accepts (docker/serve, dogbreed.serving.content_types).
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# ProductionVariantServerlessConfig's allowed values.
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = 200
# The SDK's ServerlessInferenceConfig defaults.
DEFAULT_SERVERLESS_MEMORY_MB = 2048
DEFAULT_SERVERLESS_MAX_CONCURRENCY = 5
ASYNC_MAX_CONCURRENT_INVOCATIONS = 1000  # AsyncInferenceClientConfig's maximum
# Where an async endpoint's error answers go unless --failure-output says: inside its output prefix.
ASYNC_FAILURES_FOLDER = "failures"


class EndpointError(LauncherError):
    """The endpoint answered with an error, or without what was asked; the CLI prints it, exit status 1."""


@dataclass
class Autoscaling:
    """Keep invocations per instance per minute near ``target``, between min and max instances."""

    min_instances: int
    max_instances: int
    target: float
    scale_in_cooldown: int = 300
    scale_out_cooldown: int = 60

    def __post_init__(self) -> None:
        validation.count(self.min_instances, "--min-instances")
        if self.max_instances < self.min_instances:
            raise LauncherError("--max-instances must be at least --min-instances")
        if self.target <= 0:
            raise LauncherError("--invocations-per-instance must be positive")


@dataclass
class Serverless:
    """A serverless variant: ``memory_mb`` per instance, at most ``max_concurrency`` requests at once,
    ``provisioned_concurrency`` of them kept warm (no cold start for those, billed while idle)."""

    memory_mb: int = DEFAULT_SERVERLESS_MEMORY_MB
    max_concurrency: int = DEFAULT_SERVERLESS_MAX_CONCURRENCY
    provisioned_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.memory_mb not in SERVERLESS_MEMORY_MB:
            sizes = ", ".join(str(size) for size in SERVERLESS_MEMORY_MB)
            raise LauncherError(f"--memory-mb must be one of {sizes}, not {self.memory_mb}")
        if not 1 <= self.max_concurrency <= SERVERLESS_MAX_CONCURRENCY:
            raise LauncherError(
                f"--max-concurrency must be between 1 and {SERVERLESS_MAX_CONCURRENCY}, not {self.max_concurrency}"
            )
        if self.provisioned_concurrency is not None and not 1 <= self.provisioned_concurrency <= self.max_concurrency:
            raise LauncherError(
                f"--provisioned-concurrency must be between 1 and --max-concurrency ({self.max_concurrency}), "
                f"not {self.provisioned_concurrency}"
            )


@dataclass
class AsyncInference:
    """An asynchronous endpoint: answers to ``output`` (``<output>/<inference id>.out``), error answers
    to ``failure_output`` (default ``<output>/failures``), optional SNS topics told of each."""

    output: str
    failure_output: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    max_concurrent_invocations: int | None = None  # per instance; None: SageMaker chooses

    def __post_init__(self) -> None:
        self.output = validation.s3_uri(self.output, "--output")
        self.failure_output = (
            validation.s3_uri(self.failure_output, "--failure-output")
            if self.failure_output
            else f"{self.output}/{ASYNC_FAILURES_FOLDER}"
        )
        if self.success_topic is not None:
            validation.sns_topic(self.success_topic, "--success-topic")
        if self.error_topic is not None:
            validation.sns_topic(self.error_topic, "--error-topic")
        limit = ASYNC_MAX_CONCURRENT_INVOCATIONS
        if self.max_concurrent_invocations is not None and not 1 <= self.max_concurrent_invocations <= limit:
            raise LauncherError(
                f"--max-concurrent-invocations must be between 1 and {limit}, not {self.max_concurrent_invocations}"
            )


@dataclass
class DeploySpec:
    """An endpoint for one model. ``model_data`` (``--model``) is ``s3://.../model.tar.gz`` or a training
    job name; with ``local`` a local ``model.tar.gz`` file.

    ``instance_type`` and ``instance_count`` default to :data:`DEFAULT_INSTANCE_TYPE` (``local``
    with ``local``) and 1; a serverless endpoint has neither, and refuses them.
    """

    image: str
    model_data: str
    role: str | None = None
    name: str = ""  # empty: a unique one is made
    instance_type: str | None = None
    instance_count: int | None = None
    autoscaling: Autoscaling | None = None
    serverless: Serverless | None = None
    asynchronous: AsyncInference | None = None
    # model_data is then the s3:// prefix of the models (deploy --multi-model), each invoked by its key.
    multi_model: bool = False
    local: bool = False

    def __post_init__(self) -> None:
        self._check_kind()
        if self.serverless is None:
            default_type = "local" if self.local else DEFAULT_INSTANCE_TYPE
            self.instance_type = validation.instance_type(self.instance_type or default_type, local=self.local)
            self.instance_count = validation.count(
                1 if self.instance_count is None else self.instance_count, "--instance-count"
            )
        self.name = validation.resource_name(
            self.name or sagemaker_conventions.unique_name("dogbreed"), "--name (the endpoint's name)"
        )
        if self.local:
            if self.autoscaling:
                raise LauncherError("--max-instances (autoscaling) needs a SageMaker endpoint, not --local")
            self.model_data = validation.model_data(self.model_data, local=True)
            return
        self.image = validation.ecr_image(self.image, "serving image")
        self.role = validation.role_arn(self.role)
        self.model_data = (
            validation.model_prefix(self.model_data) if self.multi_model else validation.model_data(self.model_data)
        )
        if self.autoscaling and self.autoscaling.min_instances > (self.instance_count or 0):
            raise LauncherError("--instance-count must be at least --min-instances")

    def _check_kind(self) -> None:
        """Serverless and asynchronous endpoints: one kind at a time, on SageMaker, without instance flags."""
        if self.serverless and self.asynchronous:
            raise LauncherError("--serverless and --async are two kinds of endpoint: choose one")
        kind = "--serverless" if self.serverless else "--async" if self.asynchronous else None
        if kind and self.local:
            raise LauncherError(f"{kind} needs a SageMaker endpoint, not --local")
        if self.multi_model and (kind or self.local):
            # SageMaker hosts multi-model endpoints on real-time instances only.
            raise LauncherError(f"--multi-model is a real-time endpoint on instances: drop {kind or '--local'}")
        if self.serverless:
            given = [
                flag
                for flag, value in (
                    ("--instance-type", self.instance_type),
                    ("--instance-count", self.instance_count is not None),
                    ("--max-instances", self.autoscaling),
                )
                if value
            ]
            if given:
                raise LauncherError(f"--serverless picks and scales its own capacity: drop {', '.join(given)}")


def container_environment(spec: DeploySpec) -> dict[str, str]:
    """The model container's ``Environment``: the serving image's limits made to fit the endpoint's kind
    (none for a real-time endpoint: the image's defaults are real-time's)."""
    settings = container_settings
    if spec.multi_model:
        return {settings.MULTI_MODEL_ENV: "true"}
    if spec.serverless:
        return {
            settings.WORKERS_ENV: str(settings.SERVERLESS_WORKERS),
            settings.MAX_PAYLOAD_ENV: str(settings.SERVERLESS_MAX_PAYLOAD_MB),
        }
    if spec.asynchronous:
        return {
            settings.TIMEOUT_ENV: str(settings.ASYNC_TIMEOUT_S),
            settings.MAX_PAYLOAD_ENV: str(settings.ASYNC_MAX_PAYLOAD_MB),
        }
    return {}


def production_variant(spec: DeploySpec) -> dict[str, Any]:
    """The one ``AllTraffic`` variant, as the request has it: instances, or a ``ServerlessConfig`` instead."""
    if spec.serverless:
        # By hand: the SDK's serialize() spells shapes.ProductionVariantServerlessConfig's
        # memory_size_in_mb "MemorySizeInMb", which the API refuses.
        serverless = {"MemorySizeInMB": spec.serverless.memory_mb, "MaxConcurrency": spec.serverless.max_concurrency}
        if spec.serverless.provisioned_concurrency is not None:
            serverless["ProvisionedConcurrency"] = spec.serverless.provisioned_concurrency
        return {"VariantName": VARIANT, "ModelName": spec.name, "ServerlessConfig": serverless}
    return serialize(
        shapes.ProductionVariant(
            variant_name=VARIANT,
            model_name=spec.name,
            initial_instance_count=spec.instance_count,
            instance_type=spec.instance_type,
        )
    )


def async_inference_config(config: AsyncInference) -> shapes.AsyncInferenceConfig:
    """``CreateEndpointConfig``'s ``AsyncInferenceConfig``."""
    notification = None
    if config.success_topic or config.error_topic:
        notification = shapes.AsyncInferenceNotificationConfig(
            success_topic=config.success_topic, error_topic=config.error_topic
        )
    client = None
    if config.max_concurrent_invocations is not None:
        client = shapes.AsyncInferenceClientConfig(
            max_concurrent_invocations_per_instance=config.max_concurrent_invocations
        )
    return shapes.AsyncInferenceConfig(
        output_config=shapes.AsyncInferenceOutputConfig(
            s3_output_path=config.output,
            s3_failure_path=config.failure_output,
            notification_config=notification,
        ),
        client_config=client,
    )


def model_artifacts(model_data: str, boto_session, flag: str = "--model") -> str:
    """``model_data`` itself when it is an S3 URI, else the named training job's model.tar.gz
    (``DescribeTrainingJob``; the job must be Completed, else :class:`LauncherError` naming ``flag``)."""
    if model_data.startswith("s3://"):
        return model_data
    job = boto_session.client("sagemaker").describe_training_job(TrainingJobName=model_data)
    if job["TrainingJobStatus"] != "Completed":
        raise LauncherError(f"{flag} {model_data}: the training job is {job['TrainingJobStatus']}, not Completed")
    return job["ModelArtifacts"]["S3ModelArtifacts"]


def deploy(spec: DeploySpec, boto_session, wait: bool = True) -> str:
    """Create model, endpoint config and endpoint (all named ``spec.name``); returns the endpoint name.

    A training job name in ``spec.model_data`` becomes its model.tar.gz (:func:`model_artifacts`).
    With ``wait``, and always with autoscaling (it needs the variant InService), this waits for
    the endpoint to be InService, then registers the autoscaling.

    Requests are built from ``sagemaker.core.shapes`` and sent with the plain client: the
    SDK's ``Model.create`` re-reads the model and rejects some valid DescribeModel answers.
    """
    client = boto_session.client("sagemaker")
    model_data = spec.model_data if spec.multi_model else model_artifacts(spec.model_data, boto_session)
    container = shapes.ContainerDefinition(
        image=spec.image,
        model_data_url=model_data,
        mode="MultiModel" if spec.multi_model else None,
        environment=container_environment(spec) or None,
    )
    client.create_model(
        **serialize({"ModelName": spec.name, "PrimaryContainer": container, "ExecutionRoleArn": spec.role})
    )
    config: dict[str, Any] = {"EndpointConfigName": spec.name, "ProductionVariants": [production_variant(spec)]}
    if spec.asynchronous:
        config["AsyncInferenceConfig"] = async_inference_config(spec.asynchronous)
    client.create_endpoint_config(**serialize(config))
    client.create_endpoint(EndpointName=spec.name, EndpointConfigName=spec.name)
    # A scalable target can only be registered for a variant that exists, i.e. InService.
    if wait or spec.autoscaling:
        client.get_waiter("endpoint_in_service").wait(
            EndpointName=spec.name, WaiterConfig={"Delay": 30, "MaxAttempts": 60}
        )
    if spec.autoscaling:
        enable_autoscaling(spec.name, spec.autoscaling, boto_session)
    return spec.name


def scalable_resource_id(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def enable_autoscaling(endpoint: str, scaling: Autoscaling, boto_session) -> None:
    """Application Auto Scaling: a scalable target and a target-tracking policy."""
    client = boto_session.client("application-autoscaling")
    resource_id = scalable_resource_id(endpoint)
    client.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=scaling.min_instances,
        MaxCapacity=scaling.max_instances,
    )
    client.put_scaling_policy(
        PolicyName=f"{endpoint}-invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": scaling.target,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": scaling.scale_in_cooldown,
            "ScaleOutCooldown": scaling.scale_out_cooldown,
        },
    )


def read_image(path: str) -> tuple[bytes, str]:
    """The file's bytes and Content-Type; a clear error for a missing or unsupported file."""
    file = Path(path)
    if not file.is_file():
        raise LauncherError(f"image {path!r}: no such file")
    content_type = CONTENT_TYPES.get(file.suffix.lower())
    if content_type is None:
        guessed = mimetypes.guess_type(file.name)[0]
        raise LauncherError(f"image {path!r} ({guessed or 'unknown type'}): send a JPEG or PNG file")
    return file.read_bytes(), content_type


def invoke(
    endpoint: str,
    image: str,
    runtime_client,
    custom_attributes: str | None = None,
    target_model: str | None = None,
) -> str:
    """POST the image to ``/invocations``; the answer's body as the endpoint sent it, decoded as UTF-8.

    ``custom_attributes`` (e.g. ``explain=cam``) reach the container as the
    ``X-Amzn-SageMaker-Custom-Attributes`` header. The body must be JSON (else
    :class:`LauncherError`), but it is returned untouched: its formatting, key order and
    numbers as the serving image wrote them. An error answer raises :class:`EndpointError`.
    ``target_model`` picks the model of a multi-model endpoint (its key under the endpoint's prefix).
    """
    validation.resource_name(endpoint, "endpoint name")
    body, content_type = read_image(image)
    request = {"EndpointName": endpoint, "ContentType": content_type, "Accept": "application/json", "Body": body}
    if custom_attributes is not None:
        request["CustomAttributes"] = custom_attributes
    if target_model is not None:
        request["TargetModel"] = validation.target_model(target_model)
    try:
        response = runtime_client.invoke_endpoint(**request)
    except ClientError as exc:  # SageMaker wraps the container's own error answer in a ModelError
        error = exc.response.get("Error", {})
        if error.get("Code") != "ModelError":
            raise
        answer = exc.response.get("OriginalMessage") or error.get("Message", "")
        raise EndpointError(error_answer(endpoint, exc.response.get("OriginalStatusCode"), answer)) from exc
    payload = response["Body"].read()
    # The SDK's local mode hands an error answer back as if it were one: its status tells.
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 200
    if status >= 400:
        raise EndpointError(error_answer(endpoint, status, payload.decode("utf-8", "replace")))
    return json_answer(endpoint, payload)


def json_answer(endpoint: str, payload: bytes) -> str:
    """An answer's body decoded as UTF-8, untouched; :class:`LauncherError` unless it is JSON."""
    try:
        text = payload.decode("utf-8")
        json.loads(text)
    except ValueError as exc:  # not UTF-8 (UnicodeDecodeError) or not JSON
        raise LauncherError(f"endpoint {endpoint} answered something other than JSON: {payload[:200]!r}") from exc
    return text


def error_answer(endpoint: str, status: int | None, body: str) -> str:
    """One line: the status and the reason the serving image gives (its JSON ``error``), else the body's start."""
    try:
        reason = json.loads(body)["error"]
    except (ValueError, TypeError, KeyError):
        reason = body[:300]
    reason = " ".join(str(reason).split()) or "no reason given"
    return f"endpoint {endpoint} answered {status or 'an error'}: {reason}"


def predict(
    endpoint: str,
    image: str,
    runtime_client,
    custom_attributes: str | None = None,
    target_model: str | None = None,
) -> dict[str, Any]:
    """:func:`invoke`'s answer, parsed."""
    return json.loads(invoke(endpoint, image, runtime_client, custom_attributes, target_model))


def format_prediction(result: dict[str, Any]) -> str:
    """``Siberian husky  0.912`` lines, most probable first."""
    top = result.get("top_k") or [{"label": result["predicted_label"], "probability": float("nan")}]
    width = max(len(item["label"]) for item in top)
    return "\n".join(f"{item['label']:<{width}}  {item['probability']:.3f}" for item in top)


def delete(endpoint: str, boto_session) -> list[str]:
    """Delete the endpoint's scalable targets (with their policies), the endpoint, its config and
    its models; returns what went, and which models were kept (shared, or gone already)."""
    validation.resource_name(endpoint, "endpoint name")
    client = boto_session.client("sagemaker")
    config_name = client.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    variants = client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    deleted = []
    scaling = boto_session.client("application-autoscaling")
    for variant in variants:
        resource_id = f"endpoint/{endpoint}/variant/{variant['VariantName']}"
        targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource_id])
        if targets["ScalableTargets"]:
            scaling.deregister_scalable_target(
                ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=SCALABLE_DIMENSION
            )
            deleted.append(f"scalable target {resource_id}")
    client.delete_endpoint(EndpointName=endpoint)
    deleted.append(f"endpoint {endpoint}")
    client.delete_endpoint_config(EndpointConfigName=config_name)
    deleted.append(f"endpoint config {config_name}")
    for model in sorted({v["ModelName"] for v in variants}):
        try:
            client.delete_model(ModelName=model)
            deleted.append(f"model {model}")
        except ClientError as exc:  # shared with another endpoint config, or gone already
            deleted.append(f"model {model} kept: {exc.response['Error']['Message']}")
    return deleted


# LocalSession refuses to start without a region although local mode calls no AWS service:
# without one configured, any region does.
LOCAL_MODE_REGION = "us-east-1"


def local_session(port: int) -> LocalSession:
    """The SDK's LocalSession serving on host port ``port`` (it publishes the container's 8080 there
    and sends the requests there)."""
    region = boto3.Session().region_name or LOCAL_MODE_REGION
    session = LocalSession(boto_session=boto3.Session(region_name=region))
    session.config = {"local": {"serving_port": port}}
    session.sagemaker_runtime_client.config = session.config
    return session


class LocalEndpoint:
    """The serving image run by the SDK's ``LocalSession`` (Docker) on host port ``port``.

    A context manager: model, endpoint config and endpoint on entry (once ``/ping`` answers),
    all three deleted on exit; or :meth:`start` and :meth:`close`, as a notebook's cells do.
    """

    def __init__(self, spec: DeploySpec, port: int = 8080):
        self.spec = spec
        self.session = local_session(port)

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def start(self) -> LocalEndpoint:
        """Model, endpoint config and endpoint; returns once the container answers ``/ping``."""
        client = self.session.sagemaker_client
        client.create_model(
            ModelName=self.spec.name,
            PrimaryContainer={"Image": self.spec.image, "ModelDataUrl": self.spec.model_data, "Environment": {}},
        )
        client.create_endpoint_config(
            EndpointConfigName=self.spec.name,
            ProductionVariants=[
                {
                    "VariantName": VARIANT,
                    "ModelName": self.spec.name,
                    "InitialInstanceCount": self.spec.instance_count,
                    "InstanceType": self.spec.instance_type,
                }
            ],
        )
        client.create_endpoint(EndpointName=self.spec.name, EndpointConfigName=self.spec.name)  # waits for /ping
        return self

    def invoke(self, image: str, custom_attributes: str | None = None) -> str:
        """:func:`invoke` against this endpoint."""
        return invoke(self.spec.name, image, self.session.sagemaker_runtime_client, custom_attributes)

    def predict(self, image: str, custom_attributes: str | None = None) -> dict[str, Any]:
        """:func:`predict` against this endpoint."""
        return json.loads(self.invoke(image, custom_attributes))

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> list[str]:
        """Stop the container; delete the endpoint, its config and its model. What went, as :func:`delete` says it."""
        client = self.session.sagemaker_client
        client.delete_endpoint(EndpointName=self.spec.name)
        client.delete_endpoint_config(EndpointConfigName=self.spec.name)
        client.delete_model(ModelName=self.spec.name)
        return [f"endpoint {self.spec.name}", f"endpoint config {self.spec.name}", f"model {self.spec.name}"]
