"""`report JOB_NAME` against moto: the job's output.tar.gz and Debugger trial from S3, the report
built by the training image (needs `make build`)."""

from __future__ import annotations

import json
import shutil
import tarfile
import textwrap

import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed.launcher import cli  # noqa: E402
from tests.launcher.aws import RecordingSession  # noqa: E402
from tests.launcher.conftest import REGION, REPO, TRAIN_IMAGE, run_in_training_venv  # noqa: E402
from tests.launcher.cli_args import OUT, TRAIN_ARGS  # noqa: E402

pytestmark = pytest.mark.docker

JOB = "dogbreed-report-1"


@pytest.fixture(scope="module")
def job_output(tmp_path_factory):
    """A real job's /opt/ml/output/data, from a one-epoch run in the training venv (.venv)."""
    root = tmp_path_factory.mktemp("job")
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from tests.unit.training.conftest import make_split
        from dogbreed.training.job import main
        root = Path({str(root)!r})
        for seed, (split, n) in enumerate((("train", 8), ("valid", 4), ("test", 4))):
            make_split(root / "data" / split, per_class=n, seed=seed)  # a seed per split: no file in two
        os.environ["DOGBREED_OPT_ML"] = str(root / "opt_ml")
        sys.exit(main(["--train", str(root / "data/train"), "--valid", str(root / "data/valid"),
                       "--test", str(root / "data/test"), "--arch", "resnet18", "--pretrained", "none",
                       "--epochs", "2", "--batch_size", "4", "--image-size", "64", "--resize-size", "72"]))
    """)
    proc = run_in_training_venv("-c", script, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "opt_ml" / "output" / "data"


def test_report_downloads_the_output_and_debugger_trial_and_builds_the_report(aws_env, job_output, tmp_path,
                                                                               train_image):
    aws = RecordingSession(REGION)
    assert cli.main(["train", *TRAIN_ARGS, "--job-name", JOB], session_factory=aws.factory) == 0
    hook_path = aws.params("CreateTrainingJob")["DebugHookConfig"]["S3OutputPath"]
    s3 = aws.session.client("s3")
    bucket = OUT.removeprefix("s3://").split("/")[0]
    s3.create_bucket(Bucket=bucket)
    # As SageMaker leaves it: output.tar.gz beside model.tar.gz; Debugger's trial under
    # <DebugHookConfig.S3OutputPath>/<job>/debug-output, not in the archive.
    trial = job_output / "debug-output"
    archive = tmp_path / "output.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in job_output.iterdir():
            if path.name not in ("debug-output", "report.html", "report.json", "report_figures"):
                tar.add(path, arcname=path.name)
    prefix = OUT.removeprefix(f"s3://{bucket}/")
    s3.upload_file(str(archive), bucket, f"{prefix}/{JOB}/output/output.tar.gz")
    hook_bucket, _, hook_prefix = hook_path.removeprefix("s3://").partition("/")
    for path in trial.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), hook_bucket, f"{hook_prefix}/{JOB}/debug-output/{path.relative_to(trial)}")

    dest = tmp_path / "report"
    assert cli.main(["report", JOB, "--dir", str(dest), "--image", train_image], session_factory=aws.factory) == 0
    report = dest / "output" / "report.html"
    assert report.is_file() and (dest / "output" / "report_figures" / "steps.png").is_file()
    data = json.loads((dest / "output" / "report.json").read_text())
    assert data["warnings"] == [], data["warnings"]  # curves and rules read the downloaded trial
    assert {r["name"] for r in data["rules"]} >= {"VanishingGradient", "LossNotDecreasing"}
    # The same verdicts as the report the job built itself.
    assert data["rules"] == json.loads((job_output / "report.json").read_text())["rules"]
    shutil.rmtree(dest, ignore_errors=True)


def test_report_of_an_unknown_job_is_a_clear_error(aws_env, tmp_path, capsys):
    aws = RecordingSession(REGION)
    code = cli.main(["report", "no-such-job", "--dir", str(tmp_path)], session_factory=aws.factory)
    assert code == 1  # an AWS error (DescribeTrainingJob's), not bad input
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-job" in err and "Traceback" not in err
    assert aws.operations() == ["DescribeTrainingJob"]
    assert list(tmp_path.iterdir()) == []  # nothing downloaded
