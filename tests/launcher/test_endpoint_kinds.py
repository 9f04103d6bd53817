"""Serverless, asynchronous and multi-model endpoints against moto: deploy's requests, predict --async and
--target-model, bad input.

Requests pass botocore's validation against the service models, then moto, which keeps the
endpoint configs (ServerlessConfig, AsyncInferenceConfig) and plays InvokeEndpointAsync: it
writes the answer (or the failure) it was told to into S3 and returns where. Where a test needs
what moto cannot do (an answer that never comes) the RecordingSession answers instead.
"""

from __future__ import annotations

import json

import boto3
import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed import images  # noqa: E402
from dogbreed.launcher import async_predict, cli, container_settings, hosting  # noqa: E402
from tests.launcher.aws import RecordingSession, moto_async_results  # noqa: E402
from tests.launcher.cli_args import ROLE, SERVE, assert_names_real_flags  # noqa: E402
from tests.launcher.conftest import ACCOUNT, REGION  # noqa: E402

MODEL = "s3://dogbreed-out/jobs/dogbreed-test-1/output/model.tar.gz"
MODELS = "s3://dogbreed-out/models/"
DEPLOY = ["deploy", "--image", SERVE, "--role", ROLE, "--model", MODEL]
ASYNC_OUT = "s3://dogbreed-async/answers"
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:dogbreed"
ANSWER = {"predicted_class": 1, "predicted_label": "Siberian husky", "top_k": [
    {"class": 1, "label": "Siberian husky", "probability": 0.91},
    {"class": 0, "label": "Beagle", "probability": 0.06}]}
PRINTED = ["Siberian husky  0.910", "Beagle          0.060"]


@pytest.fixture
def aws(aws_env) -> RecordingSession:
    return RecordingSession(REGION)


def run(aws: RecordingSession, *argv: str) -> int:
    return cli.main(list(argv), session_factory=aws.factory)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "dog.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


def test_the_launcher_sets_what_the_serving_image_reads():
    """The names are the serving image's, and it takes the values: one worker, 4 MB; 3600 s, the async limit."""
    from dogbreed.serving import environment

    assert container_settings.WORKERS_ENV == environment.WORKERS_ENV
    assert container_settings.TIMEOUT_ENV == environment.TIMEOUT_ENV
    assert container_settings.MAX_PAYLOAD_ENV == environment.MAX_PAYLOAD_ENV
    assert container_settings.MULTI_MODEL_ENV == environment.MULTI_MODEL_ENV
    multi = hosting.DeploySpec(SERVE, MODELS, ROLE, multi_model=True)
    assert environment.ServingEnvironment.from_env(hosting.container_environment(multi), cpus=4).multi_model
    serverless = hosting.DeploySpec(SERVE, MODEL, ROLE, serverless=hosting.Serverless())
    settings = environment.ServingEnvironment.from_env(hosting.container_environment(serverless), cpus=4)
    assert settings.workers == 1 and settings.max_payload_bytes == 4 * 2**20
    asynchronous = hosting.DeploySpec(SERVE, MODEL, ROLE, asynchronous=hosting.AsyncInference(ASYNC_OUT))
    settings = environment.ServingEnvironment.from_env(hosting.container_environment(asynchronous), cpus=4)
    assert settings.timeout_s == 3600
    # Every picture under the container's pixel cap fits, even uncompressed 8-bit RGBA.
    assert settings.max_image_pixels == images.DEFAULT_MAX_PIXELS
    assert settings.max_image_pixels * 4 <= settings.max_payload_bytes < 2 * settings.max_image_pixels * 4
    assert hosting.container_environment(hosting.DeploySpec(SERVE, MODEL, ROLE)) == {}


def test_deploy_serverless_then_delete(aws, capsys):
    code = run(aws, *DEPLOY, "--name", "dogbreed-sl", "--serverless", "--memory-mb", "3072", "--max-concurrency", "20",
               "--provisioned-concurrency", "2")
    assert code == 0
    assert aws.params("CreateModel")["PrimaryContainer"] == {
        "Image": SERVE, "ModelDataUrl": MODEL,
        "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4"}}
    config = aws.params("CreateEndpointConfig")
    assert config == {"EndpointConfigName": "dogbreed-sl", "ProductionVariants": [{
        "VariantName": "AllTraffic", "ModelName": "dogbreed-sl",
        "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 20, "ProvisionedConcurrency": 2}}]}
    described = aws.session.client("sagemaker").describe_endpoint_config(EndpointConfigName="dogbreed-sl")
    assert described["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] == 3072
    assert "RegisterScalableTarget" not in aws.operations()
    assert capsys.readouterr().out == "endpoint dogbreed-sl\n"

    assert run(aws, "delete", "dogbreed-sl") == 0
    assert capsys.readouterr().out == ("deleted endpoint dogbreed-sl\ndeleted endpoint config dogbreed-sl\n"
                                       "deleted model dogbreed-sl\n")


def test_deploy_serverless_defaults_are_the_sdks(aws):
    assert run(aws, *DEPLOY, "--name", "dogbreed-sl2", "--serverless", "--no-wait") == 0
    [variant] = aws.params("CreateEndpointConfig")["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant


def test_deploy_async_with_topics_then_predict_then_delete(aws, photo, capsys, moto_endpoint):
    code = run(aws, *DEPLOY, "--name", "dogbreed-as", "--async", "--output", ASYNC_OUT + "/", "--failure-output",
               "s3://dogbreed-async/failed", "--success-topic", TOPIC, "--error-topic", f"{TOPIC}-errors",
               "--max-concurrent-invocations", "4", "--instance-type", "ml.m5.xlarge")
    assert code == 0
    assert aws.params("CreateModel")["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(container_settings.ASYNC_MAX_PAYLOAD_MB)}
    config = aws.params("CreateEndpointConfig")
    assert config["ProductionVariants"] == [{"VariantName": "AllTraffic", "ModelName": "dogbreed-as",
                                             "InitialInstanceCount": 1, "InstanceType": "ml.m5.xlarge"}]
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": ASYNC_OUT, "S3FailurePath": "s3://dogbreed-async/failed",
                         "NotificationConfig": {"SuccessTopic": TOPIC, "ErrorTopic": f"{TOPIC}-errors"}},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}}
    out = capsys.readouterr().out
    assert out == (f"endpoint dogbreed-as\nanswers: {ASYNC_OUT}/, errors: s3://dogbreed-async/failed/\n"
                   "predict: python -m dogbreed.launcher predict dogbreed-as IMAGE --async\n")

    boto3.client("s3", region_name=REGION).create_bucket(Bucket="dogbreed-async")
    moto_async_results(moto_endpoint, {"data": json.dumps(ANSWER)})
    aws.calls.clear()
    assert run(aws, "predict", "dogbreed-as", str(photo), "--async") == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == PRINTED  # as predict prints a real-time answer
    put, invoke = aws.params("PutObject"), aws.params("InvokeEndpointAsync")
    inference_id = invoke["InferenceId"]
    assert put["Bucket"] == "dogbreed-async" and put["Key"] == f"answers/input/{inference_id}/dog.jpg"
    assert put["Body"] == photo.read_bytes() and put["ContentType"] == "image/jpeg"
    assert invoke == {"EndpointName": "dogbreed-as", "InputLocation": f"s3://dogbreed-async/{put['Key']}",
                      "ContentType": "image/jpeg", "Accept": "application/json", "InferenceId": inference_id}
    assert captured.err.startswith(f"inference {inference_id} queued; its answer goes to s3://")

    assert run(aws, "delete", "dogbreed-as") == 0
    assert "deleted endpoint dogbreed-as\n" in capsys.readouterr().out


@pytest.fixture
def async_endpoint(aws_env) -> str:
    """An asynchronous endpoint in moto, answers to ASYNC_OUT."""
    name = "dogbreed-as2"
    client = boto3.client("sagemaker", region_name=REGION)
    if name not in {e["EndpointName"] for e in client.list_endpoints()["Endpoints"]}:
        assert run(RecordingSession(REGION), *DEPLOY, "--name", name, "--async", "--output", ASYNC_OUT) == 0
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="dogbreed-async")
    return name


def test_deploy_async_defaults(async_endpoint):
    config = boto3.client("sagemaker", region_name=REGION).describe_endpoint_config(EndpointConfigName=async_endpoint)
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": ASYNC_OUT, "S3FailurePath": f"{ASYNC_OUT}/failures"}}


def test_predict_async_json_with_its_own_input_prefix(aws, async_endpoint, tmp_path, capsys, moto_endpoint):
    photo = tmp_path / "my dog (1).PNG"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    body = '{"top_k":[{"label":"Löwchen","probability":0.9100}],\n "predicted_label" : "Löwchen"}'
    moto_async_results(moto_endpoint, {"data": body})
    code = run(aws, "predict", async_endpoint, str(photo), "--async", "--json", "--input", "s3://dogbreed-async/in/")
    assert code == 0
    assert capsys.readouterr().out == body + "\n"  # the body as the endpoint wrote it
    invoke = aws.params("InvokeEndpointAsync")
    assert aws.params("PutObject")["Key"] == f"in/{invoke['InferenceId']}/my_dog_1_.PNG"
    assert invoke["ContentType"] == "image/png"


def test_predict_async_failure_is_a_one_line_endpoint_error(aws, async_endpoint, photo, capsys, moto_endpoint):
    moto_async_results(moto_endpoint, {"is_failure": True, "data": json.dumps({"error": "not an image:\n cannot identify"})})
    assert run(aws, "predict", async_endpoint, str(photo), "--async") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == f"error: endpoint {async_endpoint} answered an error: not an image: " \
                                            "cannot identify"


def test_predict_async_explain_sends_the_custom_attribute(aws, async_endpoint, photo, moto_endpoint, tmp_path):
    moto_async_results(moto_endpoint, {"data": json.dumps(ANSWER)})  # without a map: an error after the request
    assert run(aws, "predict", async_endpoint, str(photo), "--async", "--explain", str(tmp_path / "cam.png")) == 1
    assert aws.params("InvokeEndpointAsync")["CustomAttributes"] == "explain=cam"


def test_predict_async_without_an_answer_times_out(aws, async_endpoint, photo, capsys):
    aws.canned[("runtime.sagemaker", "InvokeEndpointAsync")] = {
        "InferenceId": "abc", "OutputLocation": f"{ASYNC_OUT}/abc.out", "FailureLocation": f"{ASYNC_OUT}/failures/abc.out"}
    assert run(aws, "predict", async_endpoint, str(photo), "--async", "--timeout", "0.001") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"inference abc queued; its answer goes to {ASYNC_OUT}/abc.out",
        f"error: endpoint {async_endpoint}: no answer at {ASYNC_OUT}/abc.out after 0.001 s (the request may still "
        "be queued or running; its answer lands there)"]
    assert aws.operations().count("GetObject") == 2  # the answer, then the failure, once each


def test_predict_async_on_a_real_time_endpoint_says_so(aws, photo, capsys):
    assert run(aws, *DEPLOY, "--name", "dogbreed-rt", "--no-wait") == 0
    aws.calls.clear()
    assert run(aws, "predict", "dogbreed-rt", str(photo), "--async") == 2
    assert capsys.readouterr().err == \
        "error: endpoint dogbreed-rt is not asynchronous (no AsyncInferenceConfig): predict without --async\n"
    assert aws.operations() == ["DescribeEndpoint", "DescribeEndpointConfig"]


def test_async_output_helper_reads_the_config(async_endpoint):
    client = boto3.client("sagemaker", region_name=REGION)
    assert async_predict.output_path(async_endpoint, client) == ASYNC_OUT


def test_deploy_multi_model_then_predict_each_model_then_delete(aws, photo, capsys):
    code = run(aws, "deploy", "--image", SERVE, "--role", ROLE, "--multi-model", "s3://dogbreed-out/models",
               "--name", "dogbreed-mm", "--instance-type", "ml.m5.xlarge")
    assert code == 0
    # The prefix keeps its slash: SageMaker joins each TargetModel to it.
    assert aws.params("CreateModel")["PrimaryContainer"] == {
        "Image": SERVE, "Mode": "MultiModel", "ModelDataUrl": MODELS, "Environment": {"SAGEMAKER_MULTI_MODEL": "true"}}
    assert aws.params("CreateEndpointConfig")["ProductionVariants"] == [{
        "VariantName": "AllTraffic", "ModelName": "dogbreed-mm", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.xlarge"}]
    assert "DescribeTrainingJob" not in aws.operations()
    described = aws.session.client("sagemaker").describe_model(ModelName="dogbreed-mm")
    assert described["PrimaryContainer"]["ModelDataUrl"] == MODELS
    assert capsys.readouterr().out == "endpoint dogbreed-mm\n"

    for target in ("breeds-a.tar.gz", "team/breeds-b.tar.gz"):
        aws.calls.clear()
        aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": json.dumps(ANSWER).encode(),
                                                               "ContentType": "application/json"}
        assert run(aws, "predict", "dogbreed-mm", str(photo), "--target-model", target) == 0
        assert capsys.readouterr().out.splitlines() == PRINTED
        invoke = aws.params("InvokeEndpoint")
        assert invoke["TargetModel"] == target and invoke["EndpointName"] == "dogbreed-mm"
    aws.calls.clear()
    assert run(aws, "predict", "dogbreed-mm", str(photo)) == 0
    assert "TargetModel" not in aws.params("InvokeEndpoint")

    assert run(aws, "delete", "dogbreed-mm") == 0
    assert "deleted model dogbreed-mm\n" in capsys.readouterr().out


BAD_INPUT = [
    ("memory not a size", [*DEPLOY, "--serverless", "--memory-mb", "1000"],
     "--memory-mb must be one of 1024, 2048, 3072, 4096, 5120, 6144, not 1000"),
    ("no concurrency", [*DEPLOY, "--serverless", "--max-concurrency", "0"],
     "--max-concurrency must be between 1 and 200, not 0"),
    ("too much concurrency", [*DEPLOY, "--serverless", "--max-concurrency", "201"], "between 1 and 200, not 201"),
    ("provisioned above max", [*DEPLOY, "--serverless", "--max-concurrency", "4", "--provisioned-concurrency", "5"],
     "--provisioned-concurrency must be between 1 and --max-concurrency (4), not 5"),
    ("serverless on instances", [*DEPLOY, "--serverless", "--instance-type", "ml.m5.large", "--instance-count", "2"],
     "--serverless picks and scales its own capacity: drop --instance-type, --instance-count"),
    ("serverless autoscaling", [*DEPLOY, "--serverless", "--max-instances", "3"], "drop --max-instances"),
    ("serverless locally", ["deploy", "--local", "--image", "dogbreed-serve:latest", "--model", "m.tar.gz",
                            "--serverless"], "--serverless needs a SageMaker endpoint, not --local"),
    ("async locally", ["deploy", "--local", "--image", "dogbreed-serve:latest", "--model", "m.tar.gz", "--async",
                       "--output", ASYNC_OUT], "--async needs a SageMaker endpoint, not --local"),
    ("both kinds", [*DEPLOY, "--serverless", "--async", "--output", ASYNC_OUT], "choose one"),
    ("serverless flag alone", [*DEPLOY, "--memory-mb", "2048", "--max-concurrency", "3"],
     "--memory-mb, --max-concurrency are for --serverless"),
    ("async flag alone", [*DEPLOY, "--output", ASYNC_OUT], "--output is for --async"),
    ("async without output", [*DEPLOY, "--async"], "--async needs --output s3://bucket/prefix"),
    ("async output not S3", [*DEPLOY, "--async", "--output", "answers/"], "--output 'answers/' is not an S3 URI"),
    ("async failure not S3", [*DEPLOY, "--async", "--output", ASYNC_OUT, "--failure-output", "s3:/x"],
     "--failure-output 's3:/x' is not an S3 URI"),
    ("topic not an ARN", [*DEPLOY, "--async", "--output", ASYNC_OUT, "--success-topic", "dogbreed"],
     "--success-topic 'dogbreed' is not an SNS topic ARN"),
    ("queue ARN as topic", [*DEPLOY, "--async", "--output", ASYNC_OUT, "--error-topic",
                            f"arn:aws:sqs:{REGION}:{ACCOUNT}:q"], "--error-topic"),
    ("no invocations", [*DEPLOY, "--async", "--output", ASYNC_OUT, "--max-concurrent-invocations", "0"],
     "--max-concurrent-invocations must be between 1 and 1000, not 0"),
    ("input without async", ["predict", "dogbreed-ep", "{photo}", "--input", "s3://b-1/in"],
     "--input and --timeout are for predict --async"),
    ("input not S3", ["predict", "dogbreed-ep", "{photo}", "--async", "--input", "in/"], "--input 'in/' is not an S3"),
    ("no time to wait", ["predict", "dogbreed-ep", "{photo}", "--async", "--timeout", "0"],
     "--timeout must be a positive number of seconds, not 0"),
    ("async image missing", ["predict", "dogbreed-ep", "/nonexistent/dog.jpg", "--async"], "no such file"),
    ("model and models", [*DEPLOY, "--multi-model", MODELS], "--model (one model) or --multi-model"),
    ("no model at all", ["deploy", "--image", SERVE, "--role", ROLE], "--model (one model) or --multi-model"),
    ("models not S3", ["deploy", "--image", SERVE, "--role", ROLE, "--multi-model", "models/"],
     "--multi-model 'models/' is not an S3 URI"),
    ("models one archive", ["deploy", "--image", SERVE, "--role", ROLE, "--multi-model", MODEL],
     "is one model.tar.gz; name the S3 prefix"),
    ("models serverless", ["deploy", "--image", SERVE, "--role", ROLE, "--multi-model", MODELS, "--serverless"],
     "--multi-model is a real-time endpoint on instances: drop --serverless"),
    ("models async", ["deploy", "--image", SERVE, "--role", ROLE, "--multi-model", MODELS, "--async", "--output",
                      ASYNC_OUT], "drop --async"),
    ("models locally", ["deploy", "--local", "--image", "dogbreed-serve:latest", "--multi-model", MODELS],
     "drop --local"),
    ("target not an archive", ["predict", "dogbreed-ep", "{photo}", "--target-model", "breeds-a"],
     "--target-model 'breeds-a' must be a model.tar.gz's key"),
    ("target a full URI", ["predict", "dogbreed-ep", "{photo}", "--target-model", "s3://b/m.tar.gz"],
     "--target-model"),
    ("target async", ["predict", "dogbreed-ep", "{photo}", "--async", "--target-model", "a.tar.gz"],
     "--target-model is for a multi-model endpoint, which is real-time: drop --async"),
]


@pytest.mark.parametrize("case, argv, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_fails_clearly_before_any_api_call(aws, capsys, photo, case, argv, message):
    argv = [str(photo) if a == "{photo}" else a for a in argv]
    assert run(aws, *argv) == 2, case
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert_names_real_flags(argv[0], err)
    assert aws.calls == [], f"{case}: API calls were made: {aws.operations()}"
