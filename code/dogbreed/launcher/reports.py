"""``report JOB_NAME``: a finished training job's report, rebuilt on this machine from S3.

Downloads the job's ``output.tar.gz`` (beside its ``model.tar.gz``: ``report.html``,
``metrics.json``, the confusion matrices, the profile and, without SageMaker Debugger,
the job's own smdebug trial) and, when SageMaker Debugger was on, its trial from
``<DebugHookConfig.S3OutputPath>/<job>/debug-output``. The launcher's venv holds neither
torch nor smdebug (their protobuf pins clash with the SDK's), so the report is built by
the training image itself, ``python -m dogbreed.report``: the code that built it in the job.
"""

from __future__ import annotations

import subprocess
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from dogbreed.job_outputs import REPORT_FILE, TRIAL_DIR
from dogbreed.launcher import docker_run, sagemaker_conventions, validation
from dogbreed.launcher.sagemaker_conventions import OUTPUT_ARCHIVE
from dogbreed.launcher.validation import LauncherError

CONTAINER_ROOT = PurePosixPath("/job")  # where build_report mounts the download


@dataclass(frozen=True)
class JobOutput:
    """A training job's output on this machine: ``output/`` (the unpacked archive), ``debug-output/``."""

    root: Path
    has_debugger_trial: bool

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def trial_dir(self) -> Path:
        return self.root / TRIAL_DIR


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def download_job_output(job_name: str, boto_session, dest: Path) -> JobOutput:
    """Download and unpack ``job_name``'s output (and Debugger trial) into ``dest``."""
    validation.resource_name(job_name, "training job name")
    job = boto_session.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    if job["TrainingJobStatus"] not in ("Completed", "Failed", "Stopped"):
        raise LauncherError(f"training job {job_name} is {job['TrainingJobStatus']}: its output is not written yet")
    model = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model:
        raise LauncherError(f"training job {job_name} has no output location")
    s3 = boto_session.client("s3")
    bucket, key = _split_s3(sagemaker_conventions.job_output_archive(model))
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / OUTPUT_ARCHIVE
    try:
        s3.download_file(bucket, key, str(archive))
    except Exception as exc:  # botocore's ClientError, and no connection
        raise LauncherError(f"cannot download s3://{bucket}/{key}: {exc}") from exc
    output = JobOutput(dest, has_debugger_trial=False)
    with tarfile.open(archive) as tar:
        tar.extractall(output.output_dir, filter="data")  # no paths out of dest, no devices
    hook = job.get("DebugHookConfig", {}).get("S3OutputPath")
    if not hook:
        return output
    trial = sagemaker_conventions.debugger_trial(hook, job_name)
    return replace(output, has_debugger_trial=_download_prefix(s3, trial, output.trial_dir) > 0)


def _download_prefix(s3, uri: str, dest: Path) -> int:
    """Every object under ``uri`` into ``dest``, keeping the relative paths; the count."""
    bucket, prefix = _split_s3(uri.rstrip("/") + "/")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :]
            target = (dest / relative).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise LauncherError(f"refusing to write {item['Key']} outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))
            count += 1
    return count


def build_report(output: JobOutput, image: str) -> Path:
    """Run ``python -m dogbreed.report`` in the training image over the download; the report's path."""
    args = [
        *docker_run.as_this_user(),
        "-v",
        f"{output.root.resolve()}:{CONTAINER_ROOT}",
        image,
        "python",
        "-m",
        "dogbreed.report",
        str(CONTAINER_ROOT / output.output_dir.relative_to(output.root)),
    ]
    if output.has_debugger_trial:
        args += ["--trial", str(CONTAINER_ROOT / output.trial_dir.relative_to(output.root))]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LauncherError(f"building the report in {image} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return output.output_dir / REPORT_FILE
