"""Feature caches: a features job writes the frozen backbone's outputs, later jobs read them.

With ``freeze=all`` only the new final layer trains, so what the backbone makes of each
image never changes. A *features job* (hyperparameter ``features_only=true``) computes it
once per split and stops; the cache lands in the job's ``output.tar.gz``. A training or
tuning job given ``--features-from`` gets that archive as its ``features`` channel and
trains the head on it (``features=on``): no image goes through the backbone again, so a
CPU instance is enough.
"""

from __future__ import annotations

from dogbreed.hyperparameters import decode_hyperparameter
from dogbreed.launcher import sagemaker_conventions, validation
from dogbreed.launcher.validation import LauncherError

# Jobs that read a cache train a linear head on 2048-number vectors: a CPU instance.
INSTANCE_TYPE = "ml.m5.xlarge"
_OFF = ("off", "false", "no", "0")


def _hp(hyperparameters: dict[str, str], name: str) -> str:
    """A hyperparameter as the job got it, lower case; DescribeTrainingJob may JSON-quote it."""
    return decode_hyperparameter(str(hyperparameters.get(name, ""))).lower()


def _frozen(hyperparameters: dict[str, str], what: str) -> None:
    """Cached features need the whole backbone frozen (the job refuses features=on otherwise)."""
    if _hp(hyperparameters, "freeze") not in ("", "all"):
        raise LauncherError(
            f"{what} needs freeze=all (a backbone that trains has no fixed features), "
            f"not freeze={hyperparameters['freeze']}"
        )


def features_job_hyperparameters(hyperparameters: dict[str, str]) -> dict[str, str]:
    """``hyperparameters`` plus ``features=on`` and ``features_only=true``; a contradiction is an error."""
    _frozen(hyperparameters, "a features job")
    if _hp(hyperparameters, "features") not in ("", "on"):
        raise LauncherError(f"a features job needs features=on, not features={hyperparameters['features']}")
    if _hp(hyperparameters, "features_only") in _OFF:
        raise LauncherError("a features job runs with features_only=true: do not pass features_only with --hp")
    return dict(hyperparameters, features="on", features_only="true")


def reuse_hyperparameters(hyperparameters: dict[str, str]) -> dict[str, str]:
    """``hyperparameters`` plus ``features=on``, for a job that reads a cache (``--features-from``)."""
    _frozen(hyperparameters, "--features-from")
    if _hp(hyperparameters, "features") not in ("", "on"):
        raise LauncherError(f"--features-from needs features=on, not features={hyperparameters['features']}")
    if _hp(hyperparameters, "features_only") not in ("", *_OFF):
        raise LauncherError("--features-from reads a cache, features_only=true writes one: use the features command")
    return dict(hyperparameters, features="on")


def source(value: str) -> str:
    """``--features-from`` for SageMaker: an ``s3://`` URI (an ``output.tar.gz`` or a prefix of
    ``*.pt`` files) or a training job's name, resolved later by :func:`job_archive`."""
    if value.startswith("s3:") or "://" in value:
        return validation.s3_uri(value, "--features-from")
    return validation.resource_name(value, "--features-from (a features job's name or an s3:// URI)")


def writes_cache(hyperparameters: dict[str, str]) -> bool:
    """Whether a job with these hyperparameters wrote a feature cache (``features`` on or auto with ``freeze=all``)."""
    features = _hp(hyperparameters, "features") or "auto"
    if features in _OFF:
        return False
    return features == "on" or (_hp(hyperparameters, "freeze") or "all") == "all"


def job_archive(job_name: str, boto_session) -> str:
    """The ``output.tar.gz`` of a Completed training job that wrote a feature cache."""
    job = boto_session.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    status = job["TrainingJobStatus"]
    if status != "Completed":
        raise LauncherError(f"training job {job_name} is {status}: its feature cache is there once it is Completed")
    if not writes_cache(job.get("HyperParameters", {})):
        raise LauncherError(
            f"training job {job_name} ran with features off (features=off, or freeze other than all): "
            "it wrote no feature cache; start one with the features command"
        )
    model = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model:
        raise LauncherError(f"training job {job_name} has no output location")
    return sagemaker_conventions.job_output_archive(model)
