"""Hyperparameter tuning: Bayesian search over ``lr`` and ``batch_size`` for ``valid_accuracy``.

A SageMaker tuning job runs one training job per trial; with ``features_from`` every trial
reads the same feature cache (a ``features`` channel) on a CPU instance. The same search
runs on this machine with :mod:`dogbreed.launcher.local_tuning`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sagemaker.core import shapes
from sagemaker.core.resources import HyperParameterTuningJob

from dogbreed.hyperparameters import decode_hyperparameter
from dogbreed.launcher import sagemaker_conventions, training_jobs, validation
from dogbreed.launcher.validation import LauncherError

OBJECTIVE_METRIC = "valid_accuracy"
TUNED = ("lr", "batch_size")
MAX_TUNING_JOB_NAME = 32  # SageMaker's limit; its training jobs add a suffix to it


@dataclass
class TuningSpec:
    """The search: ``lr`` log-uniform in [lr_min, lr_max], ``batch_size`` one of ``batch_sizes``."""

    training: training_jobs.TrainingSpec
    lr_min: float = 1e-4
    lr_max: float = 1e-1
    batch_sizes: list[int] = field(default_factory=lambda: [16, 32, 64])
    max_jobs: int = 10
    max_parallel_jobs: int = 2
    name: str | None = None

    def __post_init__(self) -> None:
        if self.training.local:
            raise LauncherError("a SageMaker tuning job cannot run in local mode: use local_tuning.LocalTuningSpec")
        check_search(self.lr_min, self.lr_max, self.batch_sizes, self.training.hyperparameters)
        validation.count(self.max_jobs, "--max-jobs")
        validation.count(self.max_parallel_jobs, "--max-parallel-jobs")
        if self.max_parallel_jobs > self.max_jobs:
            raise LauncherError("--max-parallel-jobs cannot exceed --max-jobs")
        self.name = validation.resource_name(
            self.name or sagemaker_conventions.unique_name("dogbreed-hpo", MAX_TUNING_JOB_NAME),
            "--name (the tuning job's name)",
            MAX_TUNING_JOB_NAME,
        )


def check_search(lr_min: float, lr_max: float, batch_sizes: list[int], static: dict[str, str]) -> None:
    """The search space (SageMaker's or the local one) and the static hyperparameters beside it."""
    if not 0 < lr_min < lr_max:
        raise LauncherError(f"need 0 < --lr-min < --lr-max, got {lr_min} and {lr_max}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise LauncherError(f"--batch-sizes must be positive integers, got {batch_sizes}")
    if static.keys() & set(TUNED):
        raise LauncherError(f"{' and '.join(TUNED)} are tuned: do not also pass them with --hp")


def tuning_job_request(spec: TuningSpec) -> dict[str, Any]:
    """The keyword arguments of ``HyperParameterTuningJob.create``, as SDK shapes."""
    job = spec.training
    request = training_jobs.training_job_request(job, region="", with_debugger=False)  # channels, spot
    algorithm = request["algorithm_specification"]
    # Tuning jobs start many training jobs: each checkpoints under its own name, which
    # SageMaker appends to the checkpoint URI; Debugger is not available in tuning jobs.
    definition = shapes.HyperParameterTrainingJobDefinition(
        algorithm_specification=shapes.HyperParameterAlgorithmSpecification(
            training_image=algorithm.training_image,
            training_input_mode=job.input_mode,
            metric_definitions=algorithm.metric_definitions,
        ),
        role_arn=job.role,
        input_data_config=request["input_data_config"],
        output_data_config=request["output_data_config"],
        resource_config=request["resource_config"],
        stopping_condition=request["stopping_condition"],
        static_hyper_parameters=dict(job.hyperparameters),
        enable_managed_spot_training=job.spot,
        checkpoint_config=shapes.CheckpointConfig(
            s3_uri=f"{job.output}/{spec.name}/checkpoints", local_path=training_jobs.CHECKPOINT_LOCAL_PATH
        ),
    )
    config = shapes.HyperParameterTuningJobConfig(
        strategy="Bayesian",
        hyper_parameter_tuning_job_objective=shapes.HyperParameterTuningJobObjective(
            type="Maximize", metric_name=OBJECTIVE_METRIC
        ),
        resource_limits=shapes.ResourceLimits(
            max_number_of_training_jobs=spec.max_jobs, max_parallel_training_jobs=spec.max_parallel_jobs
        ),
        parameter_ranges=shapes.ParameterRanges(
            continuous_parameter_ranges=[
                shapes.ContinuousParameterRange(
                    name="lr", min_value=repr(spec.lr_min), max_value=repr(spec.lr_max), scaling_type="Logarithmic"
                )
            ],
            categorical_parameter_ranges=[
                shapes.CategoricalParameterRange(name="batch_size", values=[str(b) for b in spec.batch_sizes])
            ],
        ),
        training_job_early_stopping_type="Auto",
    )
    return {
        "hyper_parameter_tuning_job_name": spec.name,
        "hyper_parameter_tuning_job_config": config,
        "training_job_definition": definition,
    }


def start_tuning_job(spec: TuningSpec, boto_session):
    """Create the tuning job (it runs for hours; ``best`` reads the result)."""
    spec.training.resolve_inputs(boto_session)  # features and model channels from a job name; manifests' images
    return HyperParameterTuningJob.create(
        session=boto_session, region=boto_session.region_name, **tuning_job_request(spec)
    )


@dataclass(frozen=True)
class BestJob:
    tuning_job: str
    status: str
    training_job: str
    objective: str
    value: float
    hyperparameters: dict[str, str]


def best_training_job(tuning_job_name: str, boto_session) -> BestJob:
    """The tuning job's best training job so far, by the objective metric."""
    validation.resource_name(tuning_job_name, "tuning job name", MAX_TUNING_JOB_NAME)
    client = boto_session.client("sagemaker")
    described = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job_name)
    status = described["HyperParameterTuningJobStatus"]
    best = described.get("BestTrainingJob")
    if not best:
        raise LauncherError(f"tuning job {tuning_job_name} ({status}) has no completed training job yet")
    metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
    return BestJob(
        tuning_job=tuning_job_name,
        status=status,
        training_job=best["TrainingJobName"],
        objective=metric["MetricName"],
        value=float(metric["Value"]),
        hyperparameters={k: decode_hyperparameter(v) for k, v in best["TunedHyperParameters"].items()},
    )
