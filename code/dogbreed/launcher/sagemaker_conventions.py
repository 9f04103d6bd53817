"""What SageMaker decides rather than the user: where a training job's output lands, unique names.

User input is checked in :mod:`dogbreed.launcher.validation`; these derive what the
launcher needs from what SageMaker answers or requires.
"""

from __future__ import annotations

import secrets
import time

OUTPUT_ARCHIVE = "output.tar.gz"  # what SageMaker makes of a training job's /opt/ml/output/data


def job_output_archive(model_artifacts: str) -> str:
    """A training job's ``output.tar.gz`` (``/opt/ml/output/data``), beside its ``model.tar.gz``.

    ``model_artifacts`` is ``ModelArtifacts.S3ModelArtifacts`` from ``DescribeTrainingJob``:
    ``<S3OutputPath>/<job>/output/model.tar.gz``.
    """
    return f"{model_artifacts.rsplit('/', 1)[0]}/{OUTPUT_ARCHIVE}"


def unique_name(base: str, max_length: int = 63) -> str:
    """``<base>-<UTC timestamp>-<random>``, cut to fit: SageMaker names are unique per account."""
    suffix = f"-{time.strftime('%y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    return base[: max_length - len(suffix)].rstrip("-") + suffix
