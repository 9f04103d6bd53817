"""The launcher's operations as Python functions: what ``python -m dogbreed.launcher`` runs.

A notebook or a script calls them with the same checked specs the CLI builds
(:class:`TrainingSpec`, :class:`TuningSpec`, :class:`LocalTuningSpec`, :class:`DeploySpec`,
:class:`TransformSpec`) and gets frozen results back::

    from dogbreed.launcher import TrainingSpec, train
    job = train(TrainingSpec(image=..., channels={"train": ..., "valid": ..., "test": ...}, output="s3://..."))
    print(job.model)

Every failure is a :class:`LauncherError` whose text is the line the CLI prints after
``error:``: bad input, an endpoint's error answer (:class:`EndpointError`), AWS refusing or
unreachable (:class:`AwsError`), a local search that failed (:class:`JobFailed`).
``session`` is a ``boto3.Session``, a function making one, or None for the default one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ParamSpec, TypeAlias, TypeVar

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from dogbreed.input_channels import FEATURES_CHANNEL
from dogbreed.job_outputs import FEATURES_DIR, REPORT_FILE
from dogbreed.launcher import (
    async_predict,
    explanations,
    feature_jobs,
    hosting,
    local_transform,
    local_tuning,
    reports,
    training_jobs,
    transform,
    tuning,
    validation,
)
from dogbreed.launcher.hosting import AsyncInference, Autoscaling, DeploySpec, EndpointError, LocalEndpoint, Serverless
from dogbreed.launcher.local_tuning import LocalTuningSpec
from dogbreed.launcher.sagemaker_conventions import OUTPUT_ARCHIVE
from dogbreed.launcher.training_jobs import TrainingSpec
from dogbreed.launcher.transform import Outcome, TransformSpec
from dogbreed.launcher.tuning import BestJob, TuningSpec
from dogbreed.launcher.validation import LauncherError

__all__ = [
    "AsyncInference",
    "Autoscaling",
    "AwsError",
    "BestJob",
    "DeploySpec",
    "Endpoint",
    "EndpointError",
    "FeatureCache",
    "JobFailed",
    "LauncherError",
    "LocalEndpoint",
    "LocalSearch",
    "LocalTuningSpec",
    "Outcome",
    "Prediction",
    "Serverless",
    "TrainingJob",
    "TrainingSpec",
    "TransformSpec",
    "TuningJob",
    "TuningSpec",
    "attach_transform",
    "best",
    "default_session",
    "delete",
    "deploy",
    "deploy_local",
    "features",
    "predict",
    "report",
    "start_transform",
    "train",
    "transform_images",
    "tune",
    "tune_local",
]

SessionLike: TypeAlias = "boto3.Session | Callable[[], boto3.Session] | None"
DEFAULT_REPORT_IMAGE = "dogbreed-train:latest"
_P = ParamSpec("_P")
_R = TypeVar("_R")


class AwsError(LauncherError):
    """AWS refused a request or could not be reached; botocore's message says why (CLI exit status 1)."""


class JobFailed(LauncherError):
    """A job on this machine exited with an error; its output said why (CLI exit status: the job's)."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def _aws_errors(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """botocore's errors become :class:`AwsError` with the same message: one exception type to catch."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise AwsError(str(exc)) from exc

    return wrapper


def default_session() -> boto3.Session:
    """A boto3 session; a missing region is an error here rather than deep in the SDK."""
    session = boto3.Session()
    if not session.region_name:
        raise LauncherError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or 'aws configure set region ...'")
    return session


def _session(session: SessionLike) -> boto3.Session:
    if session is None:
        return default_session()
    return session if isinstance(session, boto3.Session) else session()


@dataclass(frozen=True)
class TrainingJob:
    """A training (or features) job: where its model and its output data are.

    ``status`` is SageMaker's (``InProgress`` until it ends unless waited for); a local job
    has run to its end when this exists, so it is ``Completed``. ``output_data`` is the job's
    ``/opt/ml/output/data`` (report.html, metrics.json): a local directory, or on SageMaker the
    ``output.tar.gz`` holding it (:func:`report` downloads and builds the report).
    """

    name: str
    status: str
    model: str
    output_data: str
    local: bool = False

    @property
    def report(self) -> Path | None:
        """The local job's report.html, if it wrote one."""
        path = Path(self.output_data) / REPORT_FILE
        return path if self.local and path.is_file() else None


@_aws_errors
def train(spec: TrainingSpec, *, wait: bool = False, session: SessionLike = None) -> TrainingJob:
    """Start a training job (managed spot, checkpoints, Debugger, as ``spec`` says); ``spec.local``
    runs it to its end in Docker on this machine instead (no session needed)."""
    if spec.local:
        model = training_jobs.train_local(spec)
        data = training_jobs.local_output_data(spec)
        return TrainingJob(spec.job_name, "Completed", str(model), str(data), local=True)
    job = training_jobs.start_training_job(spec, _session(session), wait=wait)
    prefix = f"{spec.output}/{spec.job_name}/output"
    return TrainingJob(
        spec.job_name, str(job.training_job_status), f"{prefix}/model.tar.gz", f"{prefix}/{OUTPUT_ARCHIVE}"
    )


@dataclass(frozen=True)
class FeatureCache:
    """A features job and its cache: ``--features-from`` of a later train or tune (with ``local``, a directory)."""

    job: TrainingJob
    cache: str


@_aws_errors
def features(spec: TrainingSpec, *, wait: bool = False, session: SessionLike = None) -> FeatureCache:
    """A features job: the frozen backbone's outputs for every split, cached, and nothing trained.

    ``spec``'s hyperparameters get ``features=on`` and ``features_only=true`` (a contradiction
    is an error) and Debugger is off: nothing trains.
    """
    hyperparameters = feature_jobs.features_job_hyperparameters(spec.hyperparameters)
    spec = replace(spec, hyperparameters=hyperparameters, debugger=False)
    job = train(spec, wait=wait, session=session)
    if spec.local:
        return FeatureCache(job, str(Path(job.output_data) / FEATURES_DIR))
    return FeatureCache(job, job.output_data)  # its output.tar.gz, once the job is Completed


@dataclass(frozen=True)
class TuningJob:
    """A SageMaker tuning job; :func:`best` reads its best training job once one has completed."""

    name: str
    instance_type: str
    feature_cache: str | None = None


@_aws_errors
def tune(spec: TuningSpec, *, session: SessionLike = None) -> TuningJob:
    """Start a SageMaker tuning job over ``lr`` and ``batch_size``, maximising ``valid_accuracy``."""
    tuning.start_tuning_job(spec, _session(session))
    training = spec.training
    return TuningJob(str(spec.name), str(training.instance_type), training.channels.get(FEATURES_CHANNEL))


@dataclass(frozen=True)
class LocalSearch:
    """A finished local search: its page (tune.html, trials.json), its best hyperparameters and,
    unless ``final`` was off, the model trained with them."""

    report_dir: Path
    best_hyperparameters: dict[str, str]
    model_dir: Path | None
    features: Path


def tune_local(spec: LocalTuningSpec) -> LocalSearch:
    """The search in the local training image (``python -m dogbreed.tune``); :class:`JobFailed` if it fails."""
    code = local_tuning.run(spec)
    if code != 0:
        raise JobFailed(f"the search in {spec.image} exited with status {code} (its output above says why)", code)
    best_file = spec.report_dir / "best_hyperparameters.json"
    best_values = json.loads(best_file.read_text()) if best_file.is_file() else {}
    return LocalSearch(
        report_dir=spec.report_dir,
        best_hyperparameters={name: str(value) for name, value in best_values.items()},
        model_dir=spec.model_dir if spec.final else None,
        features=Path(spec.output) / "output" / "data" / FEATURES_DIR,
    )


@_aws_errors
def best(tuning_job: str, *, session: SessionLike = None) -> BestJob:
    """A SageMaker tuning job's best training job so far and its hyperparameters."""
    return tuning.best_training_job(tuning_job, _session(session))


@dataclass(frozen=True)
class Endpoint:
    """A SageMaker endpoint made by :func:`deploy` (its model and config share its name)."""

    name: str
    asynchronous_output: str | None = None
    asynchronous_failures: str | None = None


@_aws_errors
def deploy(spec: DeploySpec, *, wait: bool = True, session: SessionLike = None) -> Endpoint:
    """Model, endpoint config and endpoint (real-time, serverless, asynchronous or multi-model) on SageMaker.

    For ``spec.local`` use :func:`deploy_local`.
    """
    if spec.local:
        raise LauncherError("a local endpoint runs on this machine: deploy_local(spec), or deploy --local")
    name = hosting.deploy(spec, _session(session), wait=wait)
    if spec.asynchronous:
        return Endpoint(name, spec.asynchronous.output, spec.asynchronous.failure_output)
    return Endpoint(name)


def deploy_local(spec: DeploySpec, *, port: int = 8080) -> LocalEndpoint:
    """The serving image in Docker on this machine, answering on ``port`` once ``/ping`` does.

    Pass it to :func:`predict` and :func:`delete` (or use it as a context manager).
    """
    return hosting.LocalEndpoint(spec, port=port).start()


@dataclass(frozen=True)
class Prediction:
    """An endpoint's answer to one picture.

    ``body`` is the answer as the endpoint sent it; ``top_k`` its (label, probability)
    pairs, most probable first. With ``explain``, ``explanation`` is the line describing
    the map's box and ``overlay`` the PNG with the map drawn over the picture.
    """

    endpoint: str
    image: str
    body: str
    label: str
    top_k: tuple[tuple[str, float], ...]
    explanation: str | None = None
    overlay: Path | None = None

    @property
    def answer(self) -> dict:
        """The parsed body."""
        return json.loads(self.body)

    def __str__(self) -> str:
        return hosting.format_prediction(self.answer)


@_aws_errors
def predict(
    endpoint: str | LocalEndpoint,
    image: str | Path,
    *,
    explain: str | Path | None = None,
    target_model: str | None = None,
    asynchronous: bool = False,
    input_prefix: str | None = None,
    timeout: float | None = None,
    session: SessionLike = None,
    echo: Callable[[str], None] | None = None,
) -> Prediction:
    """Send a JPEG or PNG to an endpoint (a name, or a :class:`LocalEndpoint`); its breeds and probabilities.

    ``explain``: a ``.png`` path; the top class's activation map is asked for, checked and drawn
    there. ``target_model``: the model of a multi-model endpoint. ``asynchronous``: an
    asynchronous endpoint, through S3 (``input_prefix``, ``timeout`` seconds; progress to ``echo``).
    """
    image = str(image)
    hosting.read_image(image)  # a missing file fails before any client exists
    overlay = explanations.overlay_path(str(explain)) if explain is not None else None
    attributes = explanations.CUSTOM_ATTRIBUTES if overlay else None
    if target_model is not None:
        validation.target_model(target_model)  # before any client exists
    if isinstance(endpoint, LocalEndpoint):
        if asynchronous or target_model is not None or input_prefix is not None or timeout is not None:
            raise LauncherError("a local endpoint is real-time and single-model: drop the asynchronous options")
        name, text = endpoint.spec.name, endpoint.invoke(image, attributes)
    elif asynchronous:
        if target_model is not None:
            raise LauncherError("--target-model is for a multi-model endpoint, which is real-time: drop --async")
        name, text = endpoint, _predict_async(endpoint, image, input_prefix, timeout, attributes, session, echo)
    else:
        if input_prefix is not None or timeout is not None:
            raise LauncherError("--input and --timeout are for predict --async")
        runtime = _session(session).client("sagemaker-runtime")
        name, text = endpoint, hosting.invoke(endpoint, image, runtime, attributes, target_model)
    return _prediction(name, image, text, overlay)


def _predict_async(
    endpoint: str,
    image: str,
    input_prefix: str | None,
    timeout: float | None,
    custom_attributes: str | None,
    session: SessionLike,
    echo: Callable[[str], None] | None,
) -> str:
    """Upload, queue, wait: the answer's body."""
    validation.resource_name(endpoint, "endpoint name")
    prefix = validation.s3_uri(input_prefix, "--input") if input_prefix is not None else None
    timeout = async_predict.DEFAULT_TIMEOUT_S if timeout is None else timeout
    if timeout <= 0:
        raise LauncherError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    return async_predict.invoke(
        endpoint,
        image,
        _session(session),
        input_prefix=prefix,
        timeout_s=timeout,
        custom_attributes=custom_attributes,
        echo=echo or (lambda line: None),
    )


def _prediction(endpoint: str, image: str, text: str, overlay: Path | None) -> Prediction:
    """The answer as a :class:`Prediction`; with ``overlay``, its explanation checked and drawn there.

    An answer without the explanation asked for is an :class:`EndpointError`, not a
    prediction with a quiet gap.
    """
    answer = json.loads(text)
    top = answer.get("top_k") or [{"label": answer["predicted_label"], "probability": float("nan")}]
    line = None
    if overlay is not None:
        explanation = explanations.of_answer(answer, endpoint)
        png = explanations.overlay_png(image, explanation)
        line = explanations.describe(explanation)
        overlay.write_bytes(png)
    return Prediction(
        endpoint=endpoint,
        image=image,
        body=text,
        label=str(answer.get("predicted_label", top[0]["label"])),
        top_k=tuple((str(item["label"]), float(item["probability"])) for item in top),
        explanation=line,
        overlay=overlay,
    )


@_aws_errors
def start_transform(spec: TransformSpec, *, session: SessionLike = None) -> str:
    """Create a SageMaker batch transform job (its model too); the job's name. :func:`attach_transform` gathers it."""
    if spec.local:
        raise LauncherError("a local transform runs to its end: transform_images(spec)")
    transform.start(spec, _session(session))
    return spec.job_name


@_aws_errors
def attach_transform(job_name: str, *, session: SessionLike = None) -> Outcome:
    """Wait for a transform job, then gather its predictions into predictions.jsonl."""
    name = validation.resource_name(job_name, "--attach (a transform job's name)")
    return transform.attach(name, _session(session))


@_aws_errors
def transform_images(spec: TransformSpec, *, session: SessionLike = None, port: int = 8080) -> Outcome:
    """Batch transform to its end: every image under ``spec.input``, one line each in predictions.jsonl.

    ``spec.local`` runs it in Docker on this machine (serving on ``port``). ``Outcome.ok`` is
    false when the job failed or an image has no prediction.
    """
    if spec.local:
        return local_transform.run_local(spec, port=port)
    session = _session(session)
    return attach_transform(start_transform(spec, session=session), session=session)


@_aws_errors
def report(
    job: str, *, dest: Path | None = None, image: str = DEFAULT_REPORT_IMAGE, session: SessionLike = None
) -> Path:
    """Download a SageMaker training job's output and Debugger data to ``dest`` (default
    build/reports/JOB) and build its report.html with a local training image; its path."""
    output = reports.download_job_output(job, _session(session), dest or Path("build") / "reports" / job)
    return reports.build_report(output, image)


@_aws_errors
def delete(endpoint: str | LocalEndpoint, *, session: SessionLike = None) -> list[str]:
    """Delete an endpoint, its config, its model and its autoscaling (a :class:`LocalEndpoint`: its
    container too); what went."""
    if isinstance(endpoint, LocalEndpoint):
        return endpoint.close()
    return hosting.delete(endpoint, _session(session))
