"""What SageMaker decides rather than the user: where a training job's outputs land, unique names.

User input is checked in :mod:`dogbreed.launcher.validation`; these derive what the
launcher needs from what SageMaker answers or requires.
"""

from __future__ import annotations

import secrets
import time

OUTPUT_ARCHIVE = "output.tar.gz"  # what SageMaker makes of a training job's /opt/ml/output/data
# SageMaker Debugger's folder for a job's hook tensors; the job's own trial folder
# (dogbreed.job_outputs.TRIAL_DIR) has the same name but is ours to choose, this one is not.
DEBUGGER_TRIAL_FOLDER = "debug-output"


def job_output_archive(model_artifacts: str) -> str:
    """A training job's ``output.tar.gz`` (``/opt/ml/output/data``), beside its ``model.tar.gz``.

    ``model_artifacts`` is ``ModelArtifacts.S3ModelArtifacts`` from ``DescribeTrainingJob``:
    ``<S3OutputPath>/<job>/output/model.tar.gz``.
    """
    return f"{model_artifacts.rsplit('/', 1)[0]}/{OUTPUT_ARCHIVE}"


def debugger_trial(hook_output_path: str, job_name: str) -> str:
    """Where SageMaker puts a job's hook tensors: ``<DebugHookConfig.S3OutputPath>/<job>/debug-output``.

    The SDK's ``latest_job_debugger_artifacts_path`` builds the same path.
    """
    return f"{hook_output_path.rstrip('/')}/{job_name}/{DEBUGGER_TRIAL_FOLDER}"


def unique_name(base: str, max_length: int = 63) -> str:
    """``<base>-<UTC timestamp>-<random>``, cut to fit: SageMaker names are unique per account."""
    suffix = f"-{time.strftime('%y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    return base[: max_length - len(suffix)].rstrip("-") + suffix
