"""The launcher's commands against moto on 127.0.0.1: the exact requests, and bad input.

Requests pass botocore's validation against the SageMaker, Application Auto Scaling and
SageMaker Runtime service models (a malformed one raises before it is sent), then moto.
Bad input must fail with a clear message and exit status 2 before ANY API call.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed.launcher import cli
from tests.launcher.aws import RecordingSession
from tests.launcher.cli_args import DATA, IMAGE, OUT, ROLE, SERVE, TRAIN_ARGS, assert_names_real_flags
from tests.launcher.conftest import ACCOUNT, REGION, REPO


@pytest.fixture
def aws(aws_env) -> RecordingSession:
    return RecordingSession(REGION)


def run(aws: RecordingSession, *argv: str) -> int:
    return cli.main(list(argv), session_factory=aws.factory)


def test_metric_definitions_import_without_torch():
    """The launcher venv has no torch; dogbreed.metric_lines must import there."""
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    assert proc.returncode != 0, "this venv must not have torch"
    from dogbreed.metric_lines import METRIC_DEFINITIONS

    names = {d["Name"] for d in METRIC_DEFINITIONS}
    assert {"valid_accuracy", "valid_loss", "train_loss", "test_accuracy"} <= names


@pytest.mark.parametrize("command", ["train", "features", "tune", "best", "deploy", "predict", "transform", "delete",
                                     "report"])
def test_every_command_has_help(command):
    proc = subprocess.run([sys.executable, "-m", "dogbreed.launcher", command, "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m dogbreed.launcher " + command in proc.stdout


def test_the_launcher_never_imports_torch(aws_env):
    code = "import sys, dogbreed.launcher.cli, dogbreed.launcher.training_jobs, dogbreed.launcher.hosting; " \
           "import dogbreed.launcher.tuning, dogbreed.launcher.debugger_config, dogbreed.launcher.transform; " \
           "import dogbreed.launcher.local_transform; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_train_creates_a_spot_job_with_checkpoints_metrics_and_debugger(aws):
    from dogbreed.metric_lines import METRIC_DEFINITIONS

    code = run(aws, "train", *TRAIN_ARGS, "--pretrained", "s3://dogbreed-data/weights", "--instance-type",
               "ml.g4dn.xlarge", "--instance-count", "2", "--hp", "epochs=10", "--hp", "arch=resnet50",
               "--job-name", "dogbreed-test-1")
    assert code == 0
    request = aws.params("CreateTrainingJob")
    assert request["TrainingJobName"] == "dogbreed-test-1"
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert request["RoleArn"] == ROLE
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == {"train": f"{DATA}/train", "valid": f"{DATA}/valid", "test": f"{DATA}/test",
                        "pretrained": "s3://dogbreed-data/weights"}
    assert request["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["HyperParameters"] == {"epochs": "10", "arch": "resnet50"}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert request["CheckpointConfig"] == {"S3Uri": f"{OUT}/dogbreed-test-1/checkpoints", "LocalPath": "/opt/ml/checkpoints"}
    assert request["OutputDataConfig"]["S3OutputPath"] == OUT
    rules = {r["RuleConfigurationName"]: r for r in request["DebugRuleConfigurations"]}
    assert set(rules) == {"VanishingGradient", "Overfit", "Overtraining", "LossNotDecreasing", "PoorWeightInitialization"}
    for rule in rules.values():
        assert re.fullmatch(rf"\d{{12}}\.dkr\.ecr\.{REGION}\.amazonaws\.com/sagemaker-debugger-rules:latest",
                            rule["RuleEvaluatorImage"])
        assert rule["RuleParameters"]["rule_to_invoke"] == rule["RuleConfigurationName"]
    assert request["DebugHookConfig"]["S3OutputPath"] == f"{OUT}/dogbreed-test-1/debug-output"
    assert request["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    assert request["ProfilerRuleConfigurations"][0]["RuleConfigurationName"] == "ProfilerReport"
    assert request["TensorBoardOutputConfig"] == {"S3OutputPath": OUT, "LocalPath": "/opt/ml/output/tensorboard"}
    # moto holds the job as created.
    described = aws.session.client("sagemaker").describe_training_job(TrainingJobName="dogbreed-test-1")
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE


def test_train_on_demand_without_debugger(aws):
    assert run(aws, "train", *TRAIN_ARGS, "--no-spot", "--no-debugger", "--job-name", "dogbreed-test-2") == 0
    request = aws.params("CreateTrainingJob")
    assert request["EnableManagedSpotTraining"] is False
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]
    assert "DebugHookConfig" not in request and "DebugRuleConfigurations" not in request
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"


def test_tune_searches_lr_log_scale_and_batch_size_for_valid_accuracy(aws):
    code = run(aws, "tune", *TRAIN_ARGS, "--hp", "epochs=5", "--max-jobs", "12", "--max-parallel-jobs", "3",
               "--lr-min", "0.0001", "--lr-max", "0.05", "--batch-sizes", "16,32", "--name", "dogbreed-hpo-1")
    assert code == 0
    request = aws.params("CreateHyperParameterTuningJob")
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "valid_accuracy"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3}
    assert config["ParameterRanges"]["ContinuousParameterRanges"] == [
        {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.05", "ScalingType": "Logarithmic"}]
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [{"Name": "batch_size", "Values": ["16", "32"]}]
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    definition = request["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"] == {"epochs": "5"}
    assert definition["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert any(m["Name"] == "valid_accuracy" for m in definition["AlgorithmSpecification"]["MetricDefinitions"])
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"


def test_best_prints_the_best_job_and_its_hyperparameters(aws, capsys):
    aws.canned[("api.sagemaker", "DescribeHyperParameterTuningJob")] = {
        "HyperParameterTuningJobName": "dogbreed-hpo-1",
        "HyperParameterTuningJobStatus": "Completed",
        "BestTrainingJob": {
            "TrainingJobName": "dogbreed-hpo-1-007-abcd",
            "TunedHyperParameters": {"lr": "0.0031", "batch_size": '"32"'},
            "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_accuracy", "Value": 0.9125},
        },
    }
    assert run(aws, "best", "dogbreed-hpo-1") == 0
    out = capsys.readouterr().out
    assert "dogbreed-hpo-1-007-abcd: valid_accuracy=0.9125" in out
    assert "  batch_size=32\n  lr=0.0031\n" in out
    assert out.endswith("deploy it: python -m dogbreed.launcher deploy --model dogbreed-hpo-1-007-abcd\n")
    assert aws.params("DescribeHyperParameterTuningJob") == {"HyperParameterTuningJobName": "dogbreed-hpo-1"}


def test_best_before_any_job_finished_says_so(aws, capsys):
    aws.canned[("api.sagemaker", "DescribeHyperParameterTuningJob")] = {
        "HyperParameterTuningJobName": "dogbreed-hpo-1", "HyperParameterTuningJobStatus": "InProgress"}
    assert run(aws, "best", "dogbreed-hpo-1") == 2
    assert "no completed training job yet" in capsys.readouterr().err


def test_deploy_with_autoscaling_then_predict_then_delete(aws, tmp_path, capsys):
    model = "s3://dogbreed-out/jobs/dogbreed-test-1/output/model.tar.gz"
    code = run(aws, "deploy", "--image", SERVE, "--role", ROLE, "--model", model, "--name", "dogbreed-ep",
               "--instance-type", "ml.m5.large", "--instance-count", "1", "--min-instances", "1",
               "--max-instances", "4", "--invocations-per-instance", "250")
    assert code == 0
    assert aws.params("CreateModel")["PrimaryContainer"] == {"Image": SERVE, "ModelDataUrl": model}
    assert aws.params("CreateModel")["ExecutionRoleArn"] == ROLE
    variant = aws.params("CreateEndpointConfig")["ProductionVariants"][0]
    assert variant == {"VariantName": "AllTraffic", "ModelName": "dogbreed-ep", "InitialInstanceCount": 1,
                       "InstanceType": "ml.m5.large"}
    assert aws.params("CreateEndpoint") == {"EndpointName": "dogbreed-ep", "EndpointConfigName": "dogbreed-ep"}
    target = aws.params("RegisterScalableTarget")
    assert target == {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/dogbreed-ep/variant/AllTraffic",
                      "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "MinCapacity": 1, "MaxCapacity": 4}
    policy = aws.params("PutScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 250.0
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    ops = aws.operations()
    assert ops.index("CreateEndpoint") < ops.index("RegisterScalableTarget")

    photo = tmp_path / "dog.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    answer = {"predicted_class": 1, "predicted_label": "Siberian husky", "top_k": [
        {"class": 1, "label": "Siberian husky", "probability": 0.91},
        {"class": 0, "label": "Beagle", "probability": 0.06}]}
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": json.dumps(answer).encode(),
                                                           "ContentType": "application/json"}
    capsys.readouterr()
    assert run(aws, "predict", "dogbreed-ep", str(photo)) == 0
    assert capsys.readouterr().out.splitlines() == ["Siberian husky  0.910", "Beagle          0.060"]
    invoke = aws.params("InvokeEndpoint")
    assert invoke["ContentType"] == "image/jpeg" and invoke["Body"] == photo.read_bytes()
    assert invoke["EndpointName"] == "dogbreed-ep"

    assert run(aws, "delete", "dogbreed-ep") == 0
    out = capsys.readouterr().out
    for thing in ("scalable target endpoint/dogbreed-ep/variant/AllTraffic", "endpoint dogbreed-ep",
                  "endpoint config dogbreed-ep", "model dogbreed-ep"):
        assert f"deleted {thing}\n" in out
    client = aws.session.client("sagemaker")
    # moto ignores NameContains, and other tests' models live in the same moto server.
    assert "dogbreed-ep" not in {e["EndpointName"] for e in client.list_endpoints()["Endpoints"]}
    assert "dogbreed-ep" not in {m["ModelName"] for m in client.list_models()["Models"]}


def test_deploy_from_a_training_job_name_uses_its_model_artifacts(aws):
    assert run(aws, "train", *TRAIN_ARGS, "--job-name", "dogbreed-test-3") == 0
    described = aws.session.client("sagemaker").describe_training_job(TrainingJobName="dogbreed-test-3")
    assert described["TrainingJobStatus"] == "Completed"  # moto completes jobs at once
    model = f"{OUT}/dogbreed-test-3/output/model.tar.gz"
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == model
    aws.calls.clear()
    assert run(aws, "deploy", "--image", SERVE, "--role", ROLE, "--model", "dogbreed-test-3", "--name", "ep-3") == 0
    assert aws.params("DescribeTrainingJob") == {"TrainingJobName": "dogbreed-test-3"}
    assert aws.params("CreateModel")["PrimaryContainer"] == {"Image": SERVE, "ModelDataUrl": model}
    ops = aws.operations()
    assert ops.index("DescribeTrainingJob") < ops.index("CreateModel")


@pytest.mark.parametrize("status", ["InProgress", "Failed", "Stopped"])
def test_deploy_from_a_training_job_that_is_not_completed_creates_nothing(aws, capsys, status):
    aws.canned[("api.sagemaker", "DescribeTrainingJob")] = {
        "TrainingJobName": "dogbreed-test-4", "TrainingJobStatus": status,
        "ModelArtifacts": {"S3ModelArtifacts": f"{OUT}/dogbreed-test-4/output/model.tar.gz"}}
    assert run(aws, "deploy", "--image", SERVE, "--role", ROLE, "--model", "dogbreed-test-4", "--name", "ep-4") == 2
    assert capsys.readouterr().err == \
        f"error: --model dogbreed-test-4: the training job is {status}, not Completed\n"
    assert aws.operations() == ["DescribeTrainingJob"]


# Bodies a serving image could send: re-serialised with json.dumps, each would change
# (spacing, key order, 0.9100, the non-ASCII label escaped as \u00f6).
ANSWERS = [
    '{"top_k":[{"label":"Löwchen","probability":0.9100,"class":77}],\n "predicted_label" : "Löwchen","predicted_class":77}',
    '{\n  "predicted_class": 77,\n  "top_k": [{"probability": 0.91, "label": "Löwchen", "class": 77}],\n'
    '  "predicted_label": "Löwchen"\n}\n',
]


@pytest.mark.parametrize("answer", ANSWERS, ids=["one line", "indented, newline-terminated"])
def test_predict_json_prints_the_endpoints_body_as_it_came(aws, tmp_path, capsys, answer):
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    body = answer.encode("utf-8")
    assert json.dumps(json.loads(body)) != answer.rstrip("\n")  # re-serialising would show
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": body, "ContentType": "application/json"}
    assert run(aws, "predict", "dogbreed-ep", str(photo), "--json") == 0
    out = capsys.readouterr().out
    assert out == (answer if answer.endswith("\n") else answer + "\n")
    assert aws.operations() == ["InvokeEndpoint"]
    assert run(aws, "predict", "dogbreed-ep", str(photo)) == 0
    assert capsys.readouterr().out == "Löwchen  0.910\n"


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b'{"predicted_label": "L\xf6wchen"}'],
                         ids=["not JSON", "not UTF-8"])
def test_predict_refuses_an_answer_that_is_not_json(aws, tmp_path, capsys, json_flag, body):
    photo = tmp_path / "dog.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": body, "ContentType": "application/json"}
    assert run(aws, "predict", "dogbreed-ep", str(photo), *json_flag) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: endpoint dogbreed-ep answered something other than JSON: {body!r}\n"


BAD_INPUT = [
    ("non-ECR training image", ["train", *TRAIN_ARGS, "--image", "docker.io/library/dogbreed-train:latest"],
     "not an ECR image URI"),
    ("local tag as training image", ["train", *TRAIN_ARGS, "--image", "dogbreed-train:latest"], "not an ECR image URI"),
    ("bad S3 URI", ["train", *TRAIN_ARGS, "--train", "s3:/dogbreed-data/train"], "not an S3 URI"),
    ("S3 bucket with capitals", ["train", *TRAIN_ARGS, "--valid", "s3://Dogbreed/valid"], "not an S3 URI"),
    ("https output", ["train", *TRAIN_ARGS, "--output", "https://example.com/out"], "not an S3 URI"),
    ("bad instance type", ["train", *TRAIN_ARGS, "--instance-type", "g4dn.xlarge"], "not a SageMaker instance type"),
    ("bad instance type (deploy)", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3://b-1/m.tar.gz",
                                    "--instance-type", "ml.m5"], "not a SageMaker instance type"),
    ("no role", ["train", *TRAIN_ARGS, "--role", ""], "no execution role"),
    ("bad role", ["train", *TRAIN_ARGS, "--role", "dogbreed-role"], "not an IAM role ARN"),
    ("bad hyperparameter", ["train", *TRAIN_ARGS, "--hp", "epochs"], "--hp 'epochs' is not NAME=VALUE"),
    ("spot max-wait below max-run", ["train", *TRAIN_ARGS, "--max-run", "7200", "--max-wait", "3600"], "--max-wait"),
    ("tuned hp also static", ["tune", *TRAIN_ARGS, "--hp", "lr=0.1"], "are tuned"),
    ("parallel above max jobs", ["tune", *TRAIN_ARGS, "--max-jobs", "2", "--max-parallel-jobs", "3"], "cannot exceed"),
    ("tuning name too long", ["tune", *TRAIN_ARGS, "--name", "x" * 33], "--name (the tuning job's name) 'xxx"),
    ("bad job name", ["train", *TRAIN_ARGS, "--job-name", "job_1"], "--job-name 'job_1': use 1-63 letters"),
    ("non-ECR serving image", ["deploy", "--image", "dogbreed-serve:latest", "--role", ROLE, "--model",
                               "s3://b-1/model.tar.gz"], "not an ECR image URI"),
    ("model not a tarball", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3://b-1/model/"],
     "--model 's3://b-1/model' must point at a model.tar.gz"),
    ("model bucket with capitals", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3://B-1/m.tar.gz"],
     "--model 's3://B-1/m.tar.gz' is not an S3 URI"),
    ("model neither a job nor S3", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3:/b-1/m.tar.gz"],
     "--model (a training job name or s3://.../model.tar.gz) 's3:/b-1/m.tar.gz'"),
    ("no instance (deploy)", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3://b-1/m.tar.gz",
                              "--instance-count", "0"], "--instance-count must be at least 1, not 0"),
    ("no instance (train)", ["train", *TRAIN_ARGS, "--instance-count", "0"], "--instance-count must be at least 1"),
    ("bad endpoint name (deploy)", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3://b-1/m.tar.gz",
                                    "--name", "ep_1"], "--name (the endpoint's name) 'ep_1'"),
    ("local model missing", ["deploy", "--local", "--image", "dogbreed-serve:latest", "--model",
                             "/nonexistent/model.tar.gz"], "--model '/nonexistent/model.tar.gz': no such local"),
    ("local autoscaling", ["deploy", "--local", "--image", "dogbreed-serve:latest", "--model",
                           str(REPO / "pyproject.toml"), "--max-instances", "2"],
     "--max-instances (autoscaling) needs a SageMaker endpoint"),
    ("autoscaling max below min", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3://b-1/m.tar.gz",
                                   "--min-instances", "3", "--max-instances", "2"], "--max-instances"),
    ("missing image file", ["predict", "dogbreed-ep", "/nonexistent/dog.jpg"], "no such file"),
    ("not an image", ["predict", "dogbreed-ep", str(REPO / "pyproject.toml")], "send a JPEG or PNG"),
    ("explain without predict", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3://b-1/m.tar.gz",
                                 "--explain", "cam.png"], "--explain PNG needs --predict IMAGE"),
    ("predict without local", ["deploy", "--image", SERVE, "--role", ROLE, "--model", "s3://b-1/m.tar.gz",
                               "--predict", "dog.jpg"], "--predict IMAGE is for deploy --local"),
    ("bad endpoint name", ["delete", "dogbreed_ep!"], "endpoint name"),
    ("local data missing", ["train", "--local", "--image", "dogbreed-train:latest", "--train", "/nonexistent",
                            "--valid", "/nonexistent", "--test", "/nonexistent", "--output", "/tmp/x"],
     "no such local directory"),
]


@pytest.mark.parametrize("case, argv, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_fails_clearly_before_any_api_call(aws, capsys, case, argv, message):
    assert run(aws, *argv) == 2, case
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert_names_real_flags(argv[0], err)
    assert aws.calls == [], f"{case}: API calls were made: {aws.operations()}"


def test_an_aws_error_is_reported_without_a_traceback(aws, capsys):
    assert run(aws, "delete", "no-such-endpoint") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-endpoint" in err


# ---- predict --explain: the class activation map ---------------------------------------------

def exif_rotated_photo(path) -> None:
    """A grey 40x30 JPEG whose EXIF says "rotate 90°": upright, as the endpoint decodes it, 30x40."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; the picture is shown rotated
    Image.new("RGB", (40, 30), (128, 128, 128)).save(path, "JPEG", exif=exif, quality=95)


# The map of the upright 30x40 picture: a 2x2 grid over the 30x30 centre crop, hot at the bottom right.
EXPLANATION = {"method": "cam", "class": 1, "label": "Siberian husky", "logit": 2.8, "bias": 1.975,
               "grid": [[0.0, 0.1], [0.2, 3.0]], "grid_region": [0.0, 5.0, 30.0, 35.0],
               "box": [15.0, 20.0, 30.0, 35.0], "peak": [26.2, 31.2]}
EXPLAINED = {"predicted_class": 1, "predicted_label": "Siberian husky", "top_k": [
    {"class": 1, "label": "Siberian husky", "probability": 0.91}], "explanation": EXPLANATION}
BOX_LINE = "explanation: Siberian husky, box x0=15 y0=20 x1=30 y1=35 (image pixels); overlay: {}"


def expected_overlay(photo):
    """The picture the serving image answers ``Accept: image/png`` with, from the same answer."""
    import numpy as np

    from dogbreed import explain, images

    cam = explain.Explanation(1, "Siberian husky", np.asarray(EXPLANATION["grid"], np.float32), 1.975,
                              (0.0, 5.0, 30.0, 35.0), (15.0, 20.0, 30.0, 35.0), (26.2, 31.2))
    return explain.overlay(images.open_image(photo), cam)


def assert_is_the_overlay(png, photo) -> None:
    import numpy as np
    from PIL import Image

    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(png) as saved:
        pixels = np.asarray(saved.convert("RGB"))
    assert pixels.shape == (40, 30, 3)  # upright: the EXIF orientation applied, as the endpoint does
    red, blue = pixels[..., 0].astype(int), pixels[..., 2].astype(int)
    assert red[28, 22] > blue[28, 22] + 50 and blue[10, 5] > red[10, 5] + 50  # hot cell red, cold cell blue
    assert pixels[2, 15].max() < 60  # cropped away before the model: dimmed
    np.testing.assert_array_equal(pixels, np.asarray(expected_overlay(photo)))


def test_predict_explain_asks_for_the_map_prints_its_box_and_saves_the_overlay(aws, tmp_path, capsys):
    photo, png = tmp_path / "dog.jpg", tmp_path / "cam.png"
    exif_rotated_photo(photo)
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": json.dumps(EXPLAINED).encode(),
                                                           "ContentType": "application/json"}
    assert run(aws, "predict", "dogbreed-ep", str(photo), "--explain", str(png)) == 0
    invoke = aws.params("InvokeEndpoint")  # one request: the overlay is drawn from its answer
    assert invoke == {"EndpointName": "dogbreed-ep", "ContentType": "image/jpeg", "Accept": "application/json",
                      "Body": photo.read_bytes(), "CustomAttributes": "explain=cam"}
    assert capsys.readouterr().out.splitlines() == ["Siberian husky  0.910", BOX_LINE.format(png)]
    assert_is_the_overlay(png, photo)


def test_predict_json_explain_keeps_stdout_the_body(aws, tmp_path, capsys):
    photo, png = tmp_path / "dog.jpg", tmp_path / "cam.png"
    exif_rotated_photo(photo)
    body = json.dumps(EXPLAINED, indent=1) + "\n"
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": body.encode(), "ContentType": "application/json"}
    assert run(aws, "predict", "dogbreed-ep", str(photo), "--json", "--explain", str(png)) == 0
    captured = capsys.readouterr()
    assert captured.out == body
    assert captured.err == BOX_LINE.format(png) + "\n"
    assert_is_the_overlay(png, photo)


def test_predict_without_explain_sends_no_custom_attributes(aws, tmp_path):
    photo = tmp_path / "dog.jpg"
    exif_rotated_photo(photo)
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": json.dumps(EXPLAINED).encode()}
    assert run(aws, "predict", "dogbreed-ep", str(photo)) == 0
    assert "CustomAttributes" not in aws.params("InvokeEndpoint")


# What SageMaker makes of a container's 422: a ModelError, the container's body inside.
CANNOT_EXPLAIN = "this model cannot give class activation maps: it was exported before them; export it again"
MODEL_ERROR = {
    "Error": {"Code": "ModelError", "Message": 'Received client error (422) from primary with message "..."'},
    "OriginalStatusCode": 422, "OriginalMessage": json.dumps({"error": CANNOT_EXPLAIN}),
    "LogStreamArn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/dogbreed-ep",
}


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
def test_an_endpoint_that_cannot_explain_is_a_one_line_error(aws, tmp_path, capsys, json_flag):
    photo, png = tmp_path / "dog.jpg", tmp_path / "cam.png"
    exif_rotated_photo(photo)
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = MODEL_ERROR
    assert run(aws, "predict", "dogbreed-ep", str(photo), *json_flag, "--explain", str(png)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: endpoint dogbreed-ep answered 422: {CANNOT_EXPLAIN}\n"
    assert not png.exists()


def test_an_answer_without_the_map_is_an_error_not_a_silent_gap(aws, tmp_path, capsys):
    """A serving image from before maps ignores explain=cam and answers the prediction alone."""
    photo, png = tmp_path / "dog.jpg", tmp_path / "cam.png"
    exif_rotated_photo(photo)
    plain = {k: v for k, v in EXPLAINED.items() if k != "explanation"}
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": json.dumps(plain).encode()}
    assert run(aws, "predict", "dogbreed-ep", str(photo), "--explain", str(png)) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and not png.exists()
    assert captured.err.startswith("error: endpoint dogbreed-ep answered without an 'explanation' (a serving image "
                                   "from before class activation maps") and captured.err.count("\n") == 1


def test_an_incomplete_map_is_an_error(aws, tmp_path, capsys):
    photo, png = tmp_path / "dog.jpg", tmp_path / "cam.png"
    exif_rotated_photo(photo)
    partial = {**EXPLAINED, "explanation": {k: v for k, v in EXPLANATION.items() if k not in ("grid", "peak")}}
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": json.dumps(partial).encode()}
    assert run(aws, "predict", "dogbreed-ep", str(photo), "--explain", str(png)) == 1
    assert capsys.readouterr().err == "error: endpoint dogbreed-ep: the answer's explanation lacks grid, peak\n"
    assert not png.exists()


@pytest.mark.parametrize("overlay, message", [
    ("cam.jpg", "--explain 'cam.jpg': name a .png file"),
    ("/nonexistent/cam.png", "--explain '/nonexistent/cam.png': no such directory '/nonexistent'"),
], ids=["not .png", "no such directory"])
def test_a_bad_overlay_path_fails_before_any_request(aws, tmp_path, capsys, overlay, message):
    photo = tmp_path / "dog.jpg"
    exif_rotated_photo(photo)
    assert run(aws, "predict", "dogbreed-ep", str(photo), "--explain", overlay) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert aws.calls == []


# ---- deploy --local --predict --explain, through the SDK's local runtime client ----------------

class StubEndpoint:
    """An HTTP server on 127.0.0.1 playing the serving container's ``/invocations``: one canned answer."""

    def __init__(self, status: int, body: bytes):
        import http.server
        import threading

        self.requests: list[dict] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                stub.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": self.rfile.read(length)})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_local_container(monkeypatch):
    """LocalEndpoint without Docker: its model, config and container are the Docker test's; here
    the SDK's local runtime client talks to a :class:`StubEndpoint` on the endpoint's port."""
    from dogbreed.launcher import hosting

    monkeypatch.setattr(hosting.LocalEndpoint, "start", lambda self: self)
    monkeypatch.setattr(hosting.LocalEndpoint, "close", lambda self: [])
    monkeypatch.setattr("sagemaker.core.local.local_session.get_docker_host", lambda: "127.0.0.1")


@pytest.mark.parametrize("status, body, code", [
    (200, json.dumps(EXPLAINED).encode(), 0),
    (422, json.dumps({"error": CANNOT_EXPLAIN}).encode(), 1),
], ids=["explained", "cannot explain"])
def test_deploy_local_predict_explain_through_local_mode(aws_env, no_local_container, tmp_path, capsys,
                                                         status, body, code):
    photo, png, model = tmp_path / "dog.jpg", tmp_path / "cam.png", tmp_path / "model.tar.gz"
    exif_rotated_photo(photo)
    model.write_bytes(b"not read: no container starts")
    stub = StubEndpoint(status, body)
    try:
        assert cli.main(["deploy", "--local", "--image", "dogbreed-serve:latest", "--model", str(model),
                         "--name", "dogbreed-local", "--port", str(stub.port), "--predict", str(photo),
                         "--explain", str(png)]) == code
    finally:
        stub.close()
    [request] = stub.requests
    assert request["path"] == "/invocations" and request["body"] == photo.read_bytes()
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["x-amzn-sagemaker-custom-attributes"] == "explain=cam"
    assert headers["accept"] == "application/json" and headers["content-type"] == "image/jpeg"
    captured = capsys.readouterr()
    if code == 0:
        assert captured.out.splitlines()[-2:] == ["Siberian husky  0.910", BOX_LINE.format(png)]
        assert_is_the_overlay(png, photo)
    else:
        assert captured.err == f"error: endpoint dogbreed-local answered 422: {CANNOT_EXPLAIN}\n"
        assert not png.exists()
