"""Training jobs: managed spot training on SageMaker, or the same image in local mode.

A :class:`TrainingSpec` holds what the user chose, validated on construction; the cloud
path sends it to ``CreateTrainingJob`` through ``sagemaker.core.resources.TrainingJob``
(so Debugger can be set), the local path runs it with ``ModelTrainer`` in
``Mode.LOCAL_CONTAINER``. ``features_from`` adds a ``features`` channel holding a feature
cache (see :mod:`dogbreed.launcher.feature_jobs`); a split given as a manifest adds its
``<split>_manifest`` channel (:mod:`dogbreed.launcher.manifest_channels`).
``model_from`` (``--from``) adds a ``model`` channel holding an earlier job's model, which the
job continues (incremental training).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagemaker.core import shapes
from sagemaker.core.resources import TrainingJob
from sagemaker.core.training.configs import Compute, InputData

from dogbreed.input_channels import FEATURES_CHANNEL, MODEL_CHANNEL, PRETRAINED_CHANNEL, SPLIT_CHANNELS
from dogbreed.launcher import (
    debugger_config,
    feature_jobs,
    hosting,
    manifest_channels,
    sagemaker_conventions,
    validation,
)
from dogbreed.launcher.validation import LauncherError
from dogbreed.metric_lines import METRIC_DEFINITIONS

# How the image channels reach the job: downloaded first (File), or mounted and read on demand
# (FastFile, better where each image is read once). Other channels are small and always File.
INPUT_MODES = ("File", "FastFile")
# Where SageMaker syncs checkpoints with S3; the training code saves and resumes there.
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"  # the training job's TensorBoard folder
DEFAULT_INSTANCE_TYPE = "ml.g4dn.xlarge"
BASE_JOB_NAME = "dogbreed"


def metric_definitions() -> list[dict[str, str]]:
    """``dogbreed.metric_lines.METRIC_DEFINITIONS``, copied: the regexes for the job's log lines."""
    return [dict(d) for d in METRIC_DEFINITIONS]


@dataclass
class TrainingSpec:
    """One training job. Channels are ``s3://`` URIs, or local directories with ``local``; a split
    may be a manifest (``.manifest``, ``.lst``) instead, in S3 or with ``local`` a local file.

    ``instance_type`` defaults to ``local`` in local mode, to a CPU instance with
    ``features_from`` (a features job's name or an ``s3://`` URI; with ``local`` a directory),
    else to a GPU instance. ``model_from``: a training job's name or an ``s3://`` URI of its
    ``model.tar.gz`` (with ``local``, a directory or a ``model.tar.gz`` file).
    """

    image: str
    channels: dict[str, str]
    output: str
    role: str | None = None
    instance_type: str | None = None
    instance_count: int = 1
    hyperparameters: dict[str, str] = field(default_factory=dict)
    spot: bool = True
    max_run_seconds: int = 4 * 3600
    max_wait_seconds: int = 8 * 3600
    checkpoint_uri: str | None = None
    pretrained: str | None = None
    debugger: bool = True
    volume_size_gb: int = 30
    job_name: str = ""  # empty: a unique one is made
    local: bool = False
    features_from: str | None = None
    input_mode: str = "File"  # the image channels'
    model_from: str | None = None

    def __post_init__(self) -> None:
        missing = [c for c in SPLIT_CHANNELS if not self.channels.get(c)]
        if missing:
            raise LauncherError(f"missing data channel(s): {', '.join(missing)} (--train, --valid, --test)")
        self.instance_type = validation.instance_type(
            self.instance_type or self._default_instance_type(), local=self.local
        )
        validation.count(self.instance_count, "--instance-count")
        self.job_name = validation.resource_name(
            self.job_name or sagemaker_conventions.unique_name(BASE_JOB_NAME), "--job-name"
        )
        if self.pretrained:
            self.channels = {**self.channels, PRETRAINED_CHANNEL: self.pretrained}
        if self.features_from:
            self.hyperparameters = feature_jobs.reuse_hyperparameters(self.hyperparameters)
            if not self.local:
                self.features_from = feature_jobs.source(self.features_from)
            if self.local or self.features_from.startswith("s3://"):
                self.channels = {**self.channels, FEATURES_CHANNEL: self.features_from}
            # else a job name: resolve_features adds its output.tar.gz once a session exists
        if self.input_mode not in INPUT_MODES:
            raise LauncherError(f"--input-mode {self.input_mode!r}: use one of {', '.join(INPUT_MODES)}")
        if self.model_from:
            self.channels = {**self.channels, **model_channel(self.model_from, self.local)}
        if self.local:
            # Local mode runs a local tag (dogbreed-train:latest) as happily as an ECR URI.
            self.channels = {name: local_channel(uri, _flag(name)) for name, uri in self.channels.items()}
            self.output = str(Path(self.output).expanduser().resolve())
            return
        self.image = validation.ecr_image(self.image, "training image")
        self.role = validation.role_arn(self.role)
        self.channels = {name: validation.s3_uri(uri, _flag(name)) for name, uri in self.channels.items()}
        for split in SPLIT_CHANNELS:
            if manifest_channels.is_manifest(self.channels[split]):
                self.channels.update(manifest_channels.s3_channels(split, self.channels[split]))
        self.output = validation.s3_uri(self.output, "--output")
        if self.checkpoint_uri:
            self.checkpoint_uri = validation.s3_uri(self.checkpoint_uri, "--checkpoint-uri")
        else:
            self.checkpoint_uri = f"{self.output}/{self.job_name}/checkpoints"
        if self.spot and self.max_wait_seconds < self.max_run_seconds:
            raise LauncherError("--max-wait must be at least --max-run for spot training")

    def _default_instance_type(self) -> str:
        if self.local:
            return "local"
        return feature_jobs.INSTANCE_TYPE if self.features_from else DEFAULT_INSTANCE_TYPE

    def resolve_inputs(self, boto_session) -> None:
        """The channels named by a job (``features_from``, ``model_from``), from ``DescribeTrainingJob``,
        and the images' folder of each split given as a Ground Truth manifest, read from it.

        The first AWS calls of the job's launch, after every check on the input.
        """
        self.resolve_features(boto_session)
        self.resolve_manifests(boto_session)
        if self.model_from and MODEL_CHANNEL not in self.channels:
            self.channels = {
                **self.channels,
                MODEL_CHANNEL: hosting.model_artifacts(self.model_from, boto_session, flag="--from"),
            }

    def resolve_features(self, boto_session) -> None:
        """With ``features_from`` a job name: add its ``output.tar.gz`` as the ``features`` channel.

        The first AWS call of the job's launch (after every check on the input): the job
        must be Completed and have written a cache, else :class:`LauncherError`.
        """
        if self.features_from and FEATURES_CHANNEL not in self.channels:
            archive = feature_jobs.job_archive(self.features_from, boto_session)
            self.channels = {**self.channels, FEATURES_CHANNEL: archive}

    def resolve_manifests(self, boto_session) -> None:
        """Point each split given as a Ground Truth manifest at the S3 folder holding its images
        (read from the manifest, before any job is created)."""
        for split in SPLIT_CHANNELS:
            if manifest_channels.is_manifest(self.channels[split]):
                self.channels[split] = manifest_channels.images_prefix(self.channels[split], _flag(split), boto_session)

    def channel_input_mode(self, name: str) -> str:
        """The image channels' input mode; a manifest, weights or a feature cache is downloaded."""
        return self.input_mode if name in SPLIT_CHANNELS else "File"


def _flag(channel: str) -> str:
    """The command-line flag that names a channel, for messages."""
    return {FEATURES_CHANNEL: "--features-from", MODEL_CHANNEL: "--from"}.get(channel, f"--{channel}")


def model_channel(value: str, local: bool) -> dict[str, str]:
    """``--from``'s ``model`` channel: ``{}`` for a job name (:meth:`TrainingSpec.resolve_inputs` adds
    it), else the channel's URI or directory.

    SageMaker copies an ``s3://.../model.tar.gz`` into the channel as a file, which the job unpacks.
    Local mode mounts a directory: a ``model.tar.gz`` file goes as its folder, which must hold no
    other archive.
    """
    if not local:
        if value.startswith("s3:") or "://" in value:
            return {MODEL_CHANNEL: validation.s3_uri(value, "--from")}
        validation.resource_name(value, "--from (a training job's name or an s3://.../model.tar.gz)")
        return {}
    path = Path(value[len("file://") :] if value.startswith("file://") else value).expanduser()
    if path.is_dir():
        return {MODEL_CHANNEL: str(path)}
    if not path.is_file() or not path.name.endswith(".tar.gz"):
        raise LauncherError(f"--from {value!r}: no such local model directory or model.tar.gz")
    others = [p.name for p in path.parent.glob("*.tar.gz") if p != path]
    if others:
        raise LauncherError(
            f"--from {value!r}: local mode mounts its folder as the model channel, and that folder "
            f"also holds {', '.join(sorted(others))}; move the model.tar.gz into a folder of its own"
        )
    return {MODEL_CHANNEL: str(path.parent)}


def local_channel(uri: str, flag: str) -> str:
    """A local channel's folder (absolute); a split's manifest file stands for the folder it lies in."""
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    if path.is_file() and manifest_channels.is_manifest(path.name):
        return manifest_channels.local_channel(path, flag)
    return validation.local_dir(uri, flag)


def training_job_request(spec: TrainingSpec, region: str, with_debugger: bool = True) -> dict[str, Any]:
    """The keyword arguments of ``TrainingJob.create`` for ``spec``, as SDK shapes.

    ``region`` picks the Debugger rule images; ``with_debugger=False`` leaves Debugger out.
    """
    unresolved = [name for name in SPLIT_CHANNELS if manifest_channels.is_manifest(spec.channels[name])]
    if unresolved:  # a programming error: the launch resolves them first
        raise LauncherError(f"the images of {', '.join(unresolved)} are unknown until resolve_manifests runs")
    channels = [
        shapes.Channel(
            channel_name=name,
            data_source=shapes.DataSource(
                s3_data_source=shapes.S3DataSource(
                    s3_data_type="S3Prefix", s3_uri=uri, s3_data_distribution_type="FullyReplicated"
                )
            ),
            input_mode=spec.channel_input_mode(name),
        )
        for name, uri in spec.channels.items()
    ]
    stopping = shapes.StoppingCondition(max_runtime_in_seconds=spec.max_run_seconds)
    if spec.spot:
        stopping.max_wait_time_in_seconds = spec.max_wait_seconds
    request: dict[str, Any] = {
        "training_job_name": spec.job_name,
        "role_arn": spec.role,
        "algorithm_specification": shapes.AlgorithmSpecification(
            training_image=spec.image,
            training_input_mode=spec.input_mode,
            metric_definitions=[
                shapes.MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in metric_definitions()
            ],
            enable_sage_maker_metrics_time_series=True,
        ),
        "input_data_config": channels,
        "output_data_config": shapes.OutputDataConfig(s3_output_path=spec.output),
        "resource_config": shapes.ResourceConfig(
            instance_type=spec.instance_type, instance_count=spec.instance_count, volume_size_in_gb=spec.volume_size_gb
        ),
        "stopping_condition": stopping,
        "hyper_parameters": dict(spec.hyperparameters),
        "enable_managed_spot_training": spec.spot,
        # Always set: spot interruptions and on-demand retries both resume from here.
        "checkpoint_config": shapes.CheckpointConfig(s3_uri=spec.checkpoint_uri, local_path=CHECKPOINT_LOCAL_PATH),
    }
    if spec.debugger and with_debugger:
        job_output = f"{spec.output}/{spec.job_name}"
        request.update(
            debug_hook_config=debugger_config.debug_hook_config(job_output),
            debug_rule_configurations=debugger_config.debug_rules(region),
            profiler_config=debugger_config.profiler_config(job_output),
            profiler_rule_configurations=debugger_config.profiler_rules(region),
        )
    # The job writes TensorBoard scalars and its profiler trace here; SageMaker syncs it to
    # <output>/<job>/tensorboard-output (it appends the job's name and that folder itself).
    request["tensor_board_output_config"] = shapes.TensorBoardOutputConfig(
        s3_output_path=spec.output, local_path=TENSORBOARD_LOCAL_PATH
    )
    return request


def start_training_job(spec: TrainingSpec, boto_session, wait: bool = False):
    """Create the training job; with ``wait``, block until it ends. Returns the SDK resource."""
    region = boto_session.region_name
    if validation.ecr_region(spec.image) != region:
        raise LauncherError(
            f"the image is in {validation.ecr_region(spec.image)}, the job would run in {region}: "
            "SageMaker needs the image in the job's region"
        )
    spec.resolve_inputs(boto_session)
    job = TrainingJob.create(session=boto_session, region=region, **training_job_request(spec, region))
    if wait:
        job.wait(logs=True)
    return job


def train_local(spec: TrainingSpec) -> Path:
    """Run the job with the SDK's local mode (Docker on this machine); returns model.tar.gz."""
    from sagemaker.train.model_trainer import Mode, ModelTrainer  # noqa: PLC0415 - 1 s more for every command's start, for local training only

    root = Path(spec.output)
    root.mkdir(parents=True, exist_ok=True)
    trainer = ModelTrainer(
        training_mode=Mode.LOCAL_CONTAINER,
        training_image=spec.image,
        compute=Compute(instance_type=spec.instance_type, instance_count=spec.instance_count),
        hyperparameters=dict(spec.hyperparameters),
        input_data_config=[InputData(channel_name=name, data_source=uri) for name, uri in spec.channels.items()],
        base_job_name=BASE_JOB_NAME,
        local_container_root=str(root),
    )
    trainer.train(wait=True, logs=True)
    model = root / "compressed_artifacts" / "model.tar.gz"
    if not model.is_file():
        raise LauncherError(f"local training finished without {model}")
    return model


def local_output_data(spec: TrainingSpec) -> Path:
    """Where :func:`train_local` leaves the job's ``/opt/ml/output/data`` (the SDK's layout)."""
    return Path(spec.output) / "artifacts" / "output" / "data"
