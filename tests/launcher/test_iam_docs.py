"""docs/sagemaker.md's IAM list for your own user or role against the calls the commands make.

Every launcher command runs against moto through a :class:`RecordingSession`; each API call
it makes, as an IAM action, must be listed in the docs' bullet for that command, and a
command that sends a role ARN must list ``iam:PassRole``. (Actions that AWS checks on the
caller's behalf, such as Application Auto Scaling's CloudWatch alarms, make no call here:
the docs may list more than this sees, never less.)
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from types import SimpleNamespace

import boto3
import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed.launcher import cli, reports  # noqa: E402
from tests.launcher.aws import RecordingSession, moto_async_results  # noqa: E402
from tests.launcher.conftest import REGION, REPO  # noqa: E402
from tests.launcher.cli_args import OUT, ROLE, SERVE, TRAIN_ARGS  # noqa: E402

COMMANDS = ("train", "features", "tune", "best", "deploy", "predict", "transform", "delete", "report")
DOC = REPO / "docs" / "sagemaker.md"
# boto's endpoint prefix -> IAM's service prefix, where they differ.
IAM_SERVICE = {"api.sagemaker": "sagemaker", "runtime.sagemaker": "sagemaker"}
# Operations authorised by an action of another name.
IAM_ACTION = {("s3", "HeadObject"): "s3:GetObject", ("s3", "ListObjectsV2"): "s3:ListBucket"}
FEATURES_JOB = "dogbreed-iam-feat"


def documented() -> dict[str, set[str]]:
    """{command: IAM actions} from the bullets of "IAM: your own user or role"."""
    text = DOC.read_text()
    section = text[text.index("### IAM: your own user or role"):]
    section = section[:section.index("\n## ")]
    bullets = re.split(r"\n\* ", section)[1:]
    actions: dict[str, set[str]] = {}
    for bullet in bullets:
        label, _, rest = bullet.partition(": ")
        named = set(re.findall(r"`([a-z0-9-]+:[A-Za-z0-9]+)`", rest))
        for command in set(re.findall(r"[a-z]+", label)) & set(COMMANDS):
            actions.setdefault(command, set()).update(named)
    return actions


def iam_actions(aws: RecordingSession) -> set[str]:
    actions = set()
    for call in aws.calls:
        service = IAM_SERVICE.get(call.service, call.service)
        actions.add(IAM_ACTION.get((service, call.operation), f"{service}:{call.operation}"))
    return actions


def passes_a_role(value) -> bool:
    """Whether a request carries a role ARN (RoleArn, ExecutionRoleArn, ... at any depth)."""
    if isinstance(value, dict):
        return any(key.endswith("RoleArn") or passes_a_role(v) for key, v in value.items())
    if isinstance(value, list):
        return any(passes_a_role(v) for v in value)
    return False


def check(command: str, aws: RecordingSession) -> None:
    listed = documented()[command]
    assert aws.calls, f"{command} made no API call"
    missing = iam_actions(aws) - listed
    assert not missing, f"docs/sagemaker.md does not list {sorted(missing)} for {command}"
    if any(passes_a_role(call.params) for call in aws.calls):
        assert "iam:PassRole" in listed, f"{command} passes the execution role: list iam:PassRole"


@pytest.fixture
def aws(aws_env) -> RecordingSession:
    return RecordingSession(REGION)


def run(aws: RecordingSession, *argv: str) -> None:
    assert cli.main(list(argv), session_factory=aws.factory) == 0, argv


def setup_run(*argv: str) -> None:
    """A command for the setup of a test: its calls are not the ones checked."""
    run(RecordingSession(REGION), *argv)


def features_job(aws: RecordingSession) -> None:
    aws.canned[("api.sagemaker", "DescribeTrainingJob")] = {
        "TrainingJobName": FEATURES_JOB, "TrainingJobStatus": "Completed",
        "HyperParameters": {"features": "on", "features_only": "true"},
        "ModelArtifacts": {"S3ModelArtifacts": f"{OUT}/{FEATURES_JOB}/output/model.tar.gz"},
    }


def test_every_command_has_a_bullet():
    assert set(documented()) >= set(COMMANDS)


@pytest.mark.parametrize("command", ["train", "features"])
def test_train_and_features(aws, command):
    run(aws, command, *TRAIN_ARGS, "--job-name", f"dogbreed-iam-{command}")
    check(command, aws)


def test_train_from_a_features_job(aws):
    features_job(aws)
    run(aws, "train", *TRAIN_ARGS, "--features-from", FEATURES_JOB, "--job-name", "dogbreed-iam-head")
    check("train", aws)


def test_train_wait_reads_the_jobs_log(aws, monkeypatch):
    """--wait: the SDK reads CloudWatch Logs with a client of its own, sent here to the recorder."""
    from sagemaker.core.utils import logs

    monkeypatch.setattr(logs, "CloudWatchLogsClient", lambda: SimpleNamespace(client=aws.session.client("logs")))
    job = "dogbreed-iam-wait"
    client = boto3.client("logs", region_name=REGION)  # the job's log, as SageMaker writes it
    group = "/aws/sagemaker/TrainingJobs"
    if group not in {g["logGroupName"] for g in client.describe_log_groups(logGroupNamePrefix=group)["logGroups"]}:
        client.create_log_group(logGroupName=group)
    client.create_log_stream(logGroupName=group, logStreamName=f"{job}/algo-1-1700000000")
    client.put_log_events(logGroupName=group, logStreamName=f"{job}/algo-1-1700000000",
                          logEvents=[{"timestamp": int(time.time() * 1000), "message": "epoch 1 valid_accuracy=0.5"}])
    run(aws, "train", *TRAIN_ARGS, "--job-name", job, "--wait")
    assert {"DescribeLogStreams", "GetLogEvents"} <= set(aws.operations())
    check("train", aws)


def test_tune(aws):
    run(aws, "tune", *TRAIN_ARGS, "--name", "dogbreed-iam-hpo1")
    check("tune", aws)


@pytest.mark.parametrize("command", ["train", "features", "tune"])
def test_a_ground_truth_manifest_is_read_from_s3(aws, command):
    manifest = "s3://dogbreed-iam-labels/output.manifest"
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="dogbreed-iam-labels")
    s3.put_object(Bucket="dogbreed-iam-labels", Key="output.manifest",
                  Body=b'{"source-ref": "s3://dogbreed-iam-labels/dogs/1.jpg", "breed": 0}\n')
    name = ["--name", "dogbreed-iam-hpo-gt"] if command == "tune" else ["--job-name", f"dogbreed-iam-gt-{command}"]
    run(aws, command, *TRAIN_ARGS, "--train", manifest, *name)
    assert "GetObject" in aws.operations()
    check(command, aws)


def test_tune_from_a_features_job(aws):
    features_job(aws)
    run(aws, "tune", *TRAIN_ARGS, "--features-from", FEATURES_JOB, "--name", "dogbreed-iam-hpo2")
    assert "DescribeTrainingJob" in aws.operations()
    check("tune", aws)


def test_best(aws):
    aws.canned[("api.sagemaker", "DescribeHyperParameterTuningJob")] = {
        "HyperParameterTuningJobName": "dogbreed-iam-hpo1", "HyperParameterTuningJobStatus": "Completed",
        "BestTrainingJob": {"TrainingJobName": "dogbreed-iam-hpo1-001-abcd", "TunedHyperParameters": {"lr": "0.01"},
                            "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_accuracy",
                                                                            "Value": 0.5}},
    }
    run(aws, "best", "dogbreed-iam-hpo1")
    check("best", aws)


def test_deploy_from_a_job_with_autoscaling_then_predict_then_delete(aws_env, tmp_path):
    setup_run("train", *TRAIN_ARGS, "--job-name", "dogbreed-iam-model")
    deploy = RecordingSession(REGION)
    run(deploy, "deploy", "--image", SERVE, "--role", ROLE, "--model", "dogbreed-iam-model", "--name", "dogbreed-iam-ep",
        "--max-instances", "2")
    assert {"DescribeTrainingJob", "DescribeEndpoint", "RegisterScalableTarget"} <= set(deploy.operations())
    check("deploy", deploy)

    photo = tmp_path / "dog.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    predict = RecordingSession(REGION)
    predict.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": b'{"predicted_label": "Beagle"}'}
    run(predict, "predict", "dogbreed-iam-ep", str(photo))
    check("predict", predict)

    delete = RecordingSession(REGION)
    run(delete, "delete", "dogbreed-iam-ep")
    assert "DeregisterScalableTarget" in delete.operations()
    check("delete", delete)


def test_deploy_serverless_and_async_then_predict_async(aws_env, moto_endpoint, tmp_path):
    model = f"{OUT}/dogbreed-iam-model/output/model.tar.gz"
    serverless = RecordingSession(REGION)
    run(serverless, "deploy", "--image", SERVE, "--role", ROLE, "--model", model, "--name", "dogbreed-iam-sl",
        "--serverless")
    check("deploy", serverless)
    asynchronous = RecordingSession(REGION)
    run(asynchronous, "deploy", "--image", SERVE, "--role", ROLE, "--model", model, "--name", "dogbreed-iam-as",
        "--async", "--output", "s3://dogbreed-iam-async/answers")
    check("deploy", asynchronous)

    boto3.client("s3", region_name=REGION).create_bucket(Bucket="dogbreed-iam-async")
    photo = tmp_path / "dog.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    moto_async_results(moto_endpoint, {"data": '{"predicted_label": "Beagle"}'})
    predict = RecordingSession(REGION)
    run(predict, "predict", "dogbreed-iam-as", str(photo), "--async")
    assert {"DescribeEndpointConfig", "PutObject", "InvokeEndpointAsync", "GetObject"} <= set(predict.operations())
    check("predict", predict)


def test_deploy_multi_model_then_predict_a_target(aws_env, tmp_path):
    deploy = RecordingSession(REGION)
    run(deploy, "deploy", "--image", SERVE, "--role", ROLE, "--multi-model", f"{OUT}/models/", "--name",
        "dogbreed-iam-mm", "--no-wait")
    assert "CreateModel" in deploy.operations()
    check("deploy", deploy)
    photo = tmp_path / "dog.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    predict = RecordingSession(REGION)
    predict.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": b'{"predicted_label": "Beagle"}'}
    run(predict, "predict", "dogbreed-iam-mm", str(photo), "--target-model", "breeds-a.tar.gz")
    check("predict", predict)


def test_transform_from_a_job_then_attach(aws_env):
    setup_run("train", *TRAIN_ARGS, "--job-name", "dogbreed-iam-tmodel")
    s3 = boto3.client("s3", region_name=REGION)
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    for bucket in {"dogbreed-iam-in", "dogbreed-iam-out"} - existing:
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="dogbreed-iam-in", Key="photos/a.jpg", Body=b"\xff\xd8\xff\xe0 not really a jpeg")
    aws = RecordingSession(REGION)

    def sagemaker_writes_the_output(**_):  # what the job would, once created
        s3.put_object(Bucket="dogbreed-iam-out", Key="transform/a.jpg.out", Body=b'{"predicted_label": "Beagle"}')
    aws.session.events.register("after-call.sagemaker.CreateTransformJob", sagemaker_writes_the_output)
    run(aws, "transform", "--image", SERVE, "--role", ROLE, "--model", "dogbreed-iam-tmodel",
        "--input", "s3://dogbreed-iam-in/photos", "--output", "s3://dogbreed-iam-out/transform",
        "--job-name", "dogbreed-iam-tr")
    assert {"DescribeTrainingJob", "CreateModel", "CreateTransformJob", "DescribeTransformJob", "ListObjectsV2",
            "GetObject", "PutObject"} <= set(aws.operations())
    check("transform", aws)

    attach = RecordingSession(REGION)
    run(attach, "transform", "--attach", "dogbreed-iam-tr")
    check("transform", attach)


def test_report(aws, monkeypatch, tmp_path):
    job = "dogbreed-iam-report"
    setup_run("train", *TRAIN_ARGS, "--job-name", job)
    s3 = boto3.client("s3", region_name=REGION)
    bucket, _, prefix = OUT.removeprefix("s3://").partition("/")
    s3.create_bucket(Bucket=bucket)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("metrics.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{job}/output/output.tar.gz", Body=archive.getvalue())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{job}/debug-output/{job}/debug-output/index/000.json", Body=b"{}")
    monkeypatch.setattr(reports, "build_report", lambda output, image: output.output_dir / "report.html")  # no Docker
    run(aws, "report", job, "--dir", str(tmp_path / "report"))
    assert {"DescribeTrainingJob", "GetObject", "ListObjectsV2"} <= set(aws.operations())
    check("report", aws)
