"""``transform``: batch transform with the serving image, against moto and through the SDK's local mode.

moto holds the buckets, the model and the transform job; it never runs the job, so the tests
play SageMaker's part where needed: right after CreateTransformJob they write the ``<key>.out``
objects the service would, and answer DescribeTransformJob for a job that failed. The local
test runs the real serving image over real photos with ``LocalSession``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import boto3
import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed import explain  # noqa: E402
from dogbreed.launcher import cli, container_settings, explanations, predictions, transform  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.launcher.aws import RecordingSession  # noqa: E402
from tests.launcher.conftest import REGION, REPO, run_in_training_venv  # noqa: E402
from tests.launcher.cli_args import OUT, ROLE, SERVE, TRAIN_ARGS, assert_names_real_flags  # noqa: E402

PHOTOS = "s3://dogbreed-data/photos"
RESULTS = "s3://dogbreed-out/transform"
BREEDS = {"Beagle", "Siberian husky", "Toy poodle"}
# The endpoint's answer for one image, as the serving image writes it.
ANSWERS = {
    "a.jpg": {"predicted_class": 0, "predicted_label": "Beagle",
              "top_k": [{"class": 0, "label": "Beagle", "probability": 0.8}]},
    "sub/b.png": {"predicted_class": 2, "predicted_label": "Toy poodle",
                  "top_k": [{"class": 2, "label": "Toy poodle", "probability": 0.7}]},
    "c.jpg": {"predicted_class": 1, "predicted_label": "Siberian husky",
              "top_k": [{"class": 1, "label": "Siberian husky", "probability": 0.9}]},
}


@pytest.fixture
def aws(aws_env) -> RecordingSession:
    return RecordingSession(REGION)


def run(aws: RecordingSession, *argv: str) -> int:
    return cli.main(list(argv), session_factory=aws.factory)


def s3():
    """A client of its own: what it does is the test's (or SageMaker's), not the launcher's."""
    return boto3.client("s3", region_name=REGION)


def put(uri: str, body: bytes) -> None:
    bucket, key = predictions.split_s3(uri)
    client = s3()
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key=key, Body=body)


def get(uri: str) -> bytes:
    bucket, key = predictions.split_s3(uri)
    return s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def photos(prefix: str) -> None:
    """Three "images" under ``prefix``, one in a sub-folder (the endpoint is played by the test),
    and the bucket of the results."""
    for key in ANSWERS:
        put(f"{prefix}/{key}", b"\xff\xd8\xff\xe0 not really a jpeg")
    bucket, _ = predictions.split_s3(RESULTS)
    if bucket not in {b["Name"] for b in s3().list_buckets()["Buckets"]}:
        s3().create_bucket(Bucket=bucket)


def play_sagemaker(aws: RecordingSession, answered: list[str], status: str = "Completed",
                   failure: str | None = None, answers: dict[str, dict] = ANSWERS) -> None:
    """After CreateTransformJob: write ``<key>.out`` for the ``answered`` keys, as batch transform
    would, and (for another status than moto's Completed) answer DescribeTransformJob with it."""
    def after_create(**_):
        request = aws.params("CreateTransformJob")
        output = request["TransformOutput"]["S3OutputPath"]
        for key in answered:
            put(f"{output}/{key}.out", json.dumps(answers[key]).encode())
        if status != "Completed":
            aws.canned[("api.sagemaker", "DescribeTransformJob")] = {
                **request, "TransformJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:transform-job/x",
                "TransformJobStatus": status, "FailureReason": failure,
                "CreationTime": 0}
    aws.session.events.register("after-call.sagemaker.CreateTransformJob", after_create)


def lines(uri: str) -> list[dict]:
    text = get(uri).decode("utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_transform_creates_a_model_and_a_job_of_one_image_per_request(aws, capsys):
    photos(PHOTOS)
    code = run(aws, "transform", "--image", SERVE, "--role", ROLE, "--model", f"{OUT}/job-1/output/model.tar.gz",
               "--input", f"{PHOTOS}/", "--output", RESULTS, "--job-name", "dogbreed-tr-1", "--no-wait")
    assert code == 0
    assert aws.params("CreateModel") == {
        "ModelName": "dogbreed-tr-1", "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": SERVE, "ModelDataUrl": f"{OUT}/job-1/output/model.tar.gz"}}
    assert aws.params("CreateTransformJob") == {
        "TransformJobName": "dogbreed-tr-1",
        "ModelName": "dogbreed-tr-1",
        "BatchStrategy": "SingleRecord",
        "MaxPayloadInMB": 6,
        # MaxConcurrentTransforms left to the container's /execution-parameters (its workers).
        "Environment": {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{PHOTOS}/"}},
            "ContentType": "application/x-image", "CompressionType": "None", "SplitType": "None"},
        "TransformOutput": {"S3OutputPath": RESULTS, "Accept": "application/json", "AssembleWith": "None"},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
    }
    ops = aws.operations()
    assert ops.index("ListObjectsV2") < ops.index("CreateModel") < ops.index("CreateTransformJob")
    assert "DescribeTransformJob" not in ops  # --no-wait
    out = capsys.readouterr().out
    assert out.endswith("python -m dogbreed.launcher transform --attach dogbreed-tr-1\n")
    described = aws.session.client("sagemaker").describe_transform_job(TransformJobName="dogbreed-tr-1")
    assert described["ModelName"] == "dogbreed-tr-1"


def test_transform_limits_reach_the_container(aws):
    photos(PHOTOS)
    code = run(aws, "transform", "--image", SERVE, "--role", ROLE, "--model", f"{OUT}/job-1/output/model.tar.gz",
               "--input", PHOTOS, "--output", f"{RESULTS}-2", "--job-name", "dogbreed-tr-2", "--no-wait",
               "--max-payload-mb", "20", "--max-concurrent-transforms", "4", "--content-type", "image/jpeg",
               "--instance-type", "ml.c5.2xlarge", "--instance-count", "2")
    assert code == 0
    request = aws.params("CreateTransformJob")
    assert request["MaxPayloadInMB"] == 20 and request["MaxConcurrentTransforms"] == 4
    assert request["Environment"] == {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20", "SAGEMAKER_MODEL_SERVER_WORKERS": "4"}
    assert request["TransformInput"]["ContentType"] == "image/jpeg"
    assert request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"{PHOTOS}/"
    assert request["TransformResources"] == {"InstanceType": "ml.c5.2xlarge", "InstanceCount": 2}


def test_transform_explain_asks_the_container_for_maps(aws):
    """Batch transform sends no per-record headers: the container's default says cam."""
    photos(PHOTOS)
    assert run(aws, *BASE, "--output", f"{RESULTS}-x1", "--job-name", "dogbreed-tr-x1", "--no-wait",
               "--explain") == 0
    request = aws.params("CreateTransformJob")
    assert request["Environment"] == {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "6", "DOGBREED_EXPLAIN": "cam"}
    assert request["TransformOutput"]["Accept"] == "application/json"  # the maps come inside the JSON answers


def test_transform_local_explain_reaches_the_sdks_container_environment(aws_env, tmp_path):
    """transform --local: the SDK's local job gives the request's Environment to the serving container."""
    from sagemaker.core.local import LocalSession
    from sagemaker.core.local.entities import _LocalTransformJob

    (tmp_path / "in").mkdir()
    (tmp_path / "model.tar.gz").write_bytes(b"...")
    spec = transform.TransformSpec(image="dogbreed-serve:latest", model_data=str(tmp_path / "model.tar.gz"),
                                   input=str(tmp_path / "in"), output=str(tmp_path / "out"), local=True,
                                   job_name="dogbreed-local-x", explain=True)
    session = LocalSession()
    client = session.sagemaker_client
    client.create_model(ModelName=spec.job_name, PrimaryContainer={"Image": spec.image, "ModelDataUrl": "file:///x",
                                                                   "Environment": {}})
    try:
        job = _LocalTransformJob(spec.job_name, spec.job_name, session)
        request = transform.transform_job_request(spec, "file:///in", "file:///out")
        environment = job._get_container_environment(**request)
    finally:
        client.delete_model(ModelName=spec.job_name)
    assert environment["DOGBREED_EXPLAIN"] == "cam" and environment["SAGEMAKER_BATCH"] == "True"


def test_transform_local_explain_checks_each_answer_for_its_map(aws_env, tmp_path, capsys, monkeypatch):
    """transform --local --explain without Docker: the SDK's job is played by a stand-in that answers
    with the request it was given, one answer with a map and one without."""
    from dogbreed.launcher import local_transform

    inputs, output = tmp_path / "in", tmp_path / "out"
    (inputs / "sub").mkdir(parents=True)
    for key in ("a.jpg", "sub/b.png"):
        (inputs / key).write_bytes(b"...")
    (tmp_path / "model.tar.gz").write_bytes(b"...")
    seen = []

    def sdk_job(spec, port, staged_in, staged_out):
        seen.append(transform.transform_job_request(spec, f"file://{staged_in}", f"file://{staged_out}"))
        staged_out.mkdir()
        answers = [EXPLAINED["a.jpg"], ANSWERS["sub/b.png"]]  # in key order: a.jpg, sub/b.png
        for name, answer in zip(sorted(p.name for p in staged_in.iterdir()), answers):
            (staged_out / f"{name}.out").write_text(json.dumps(answer))
        return "Completed", None

    monkeypatch.setattr(local_transform, "_run_sdk", sdk_job)
    code = cli.main(["transform", "--local", "--image", "dogbreed-serve:latest",
                     "--model", str(tmp_path / "model.tar.gz"), "--input", str(inputs), "--output", str(output),
                     "--explain"])
    assert code == 1
    assert seen[0]["Environment"]["DOGBREED_EXPLAIN"] == "cam"
    records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert records[0] == {"key": "a.jpg", **EXPLAINED["a.jpg"]}
    assert records[1]["key"] == "sub/b.png" and records[1]["error"].startswith("the answer has no 'explanation'")
    assert "(2 images: 1 predicted, 1 failed)" in capsys.readouterr().out


# The answers with their maps (the grid shortened to 2x2), as the serving image writes them.
EXPLAINED = {key: {**answer, "explanation": {
    "method": "cam", "class": answer["predicted_class"], "label": answer["predicted_label"], "logit": 1.5,
    "bias": 0.25, "grid": [[0.0, 0.5], [1.0, 3.5]], "grid_region": [0.0, 10.0, 200.0, 210.0],
    "box": [100.0, 110.0, 200.0, 210.0], "peak": [170.5, 180.5]}} for key, answer in ANSWERS.items()}


def test_explained_answers_keep_their_box_and_grid_in_predictions_jsonl(aws, capsys):
    photos(PHOTOS)
    plain = {**EXPLAINED, "c.jpg": ANSWERS["c.jpg"]}  # c.jpg: answered by a serving image that ignores maps
    play_sagemaker(aws, answered=list(ANSWERS), answers=plain)
    code = run(aws, *BASE, "--output", f"{RESULTS}-x2", "--job-name", "dogbreed-tr-x2", "--explain")
    out = capsys.readouterr().out
    assert code == 1, out
    missing = ("the answer has no 'explanation' (a serving image from before class activation maps, "
               "or a code/inference.py that changes the answer?)")
    assert lines(f"{RESULTS}-x2/predictions.jsonl") == [
        {"key": "a.jpg", **EXPLAINED["a.jpg"]}, {"key": "c.jpg", "error": missing},
        {"key": "sub/b.png", **EXPLAINED["sub/b.png"]}]
    assert out.splitlines()[-2:] == [
        f"predictions: {RESULTS}-x2/predictions.jsonl (3 images: 2 predicted, 1 failed)", f"  failed: c.jpg: {missing}"]


def test_attach_checks_the_maps_the_job_asked_for(aws, capsys, monkeypatch):
    """--attach has no --explain: the job's own Environment says whether it asked for maps."""
    photos(PHOTOS)
    for name, flags in (("dogbreed-tr-x3", ["--explain"]), ("dogbreed-tr-x4", [])):
        assert run(aws, *BASE, "--output", f"{RESULTS}-{name}", "--job-name", name, "--no-wait", *flags) == 0
        for key in ANSWERS:  # no maps in either: only the job that asked for them fails
            put(f"{RESULTS}-{name}/{key}.out", json.dumps(ANSWERS[key]).encode())
    capsys.readouterr()
    assert run(aws, "transform", "--attach", "dogbreed-tr-x3") == 1
    assert "(3 images: 0 predicted, 3 failed)" in capsys.readouterr().out
    assert run(aws, "transform", "--attach", "dogbreed-tr-x4") == 0
    assert "(3 images: 3 predicted, 0 failed)" in capsys.readouterr().out


def test_the_launcher_sets_what_the_serving_image_reads():
    """Environment names, the default payload limit and the Content-Types are the serving image's."""
    from dogbreed.serving import environment

    assert container_settings.MAX_PAYLOAD_ENV == environment.MAX_PAYLOAD_ENV
    assert container_settings.WORKERS_ENV == environment.WORKERS_ENV
    assert container_settings.DEFAULT_MAX_PAYLOAD_MB == environment.DEFAULT_MAX_PAYLOAD_MB
    assert explanations.ENV == environment.EXPLAIN_ENV and explanations.METHOD in explain.METHODS
    # content_types and request need the inference toolkit, which lives in the training venv.
    script = ("import sys; from dogbreed.serving import content_types, request; "
              "print(sorted(content_types.SUPPORTED)); "
              "print(request.requested_explain({request.CUSTOM_ATTRIBUTES_HEADER: sys.argv[1]}))")
    proc = run_in_training_venv("-c", script, explanations.CUSTOM_ATTRIBUTES, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [str(sorted(transform.CONTENT_TYPES)), explanations.METHOD]


def test_transform_from_a_training_job_uses_its_model_artifacts(aws):
    assert run(aws, "train", *TRAIN_ARGS, "--job-name", "dogbreed-tr-model") == 0
    photos(PHOTOS)
    aws.calls.clear()
    assert run(aws, "transform", "--image", SERVE, "--role", ROLE, "--model", "dogbreed-tr-model",
               "--input", PHOTOS, "--output", f"{RESULTS}-3", "--job-name", "dogbreed-tr-3", "--no-wait") == 0
    assert aws.params("DescribeTrainingJob") == {"TrainingJobName": "dogbreed-tr-model"}
    assert aws.params("CreateModel")["PrimaryContainer"]["ModelDataUrl"] == f"{OUT}/dogbreed-tr-model/output/model.tar.gz"


def test_a_completed_job_gives_one_line_per_image_with_its_key(aws, capsys):
    photos(PHOTOS)
    play_sagemaker(aws, answered=list(ANSWERS))
    code = run(aws, "transform", "--image", SERVE, "--role", ROLE, "--model", f"{OUT}/j/output/model.tar.gz",
               "--input", PHOTOS, "--output", f"{RESULTS}-4", "--job-name", "dogbreed-tr-4")
    out = capsys.readouterr().out
    assert code == 0, out
    assert lines(f"{RESULTS}-4/predictions.jsonl") == [{"key": key, **ANSWERS[key]} for key in sorted(ANSWERS)]
    assert out.splitlines()[-1] == f"predictions: {RESULTS}-4/predictions.jsonl (3 images: 3 predicted, 0 failed)"
    assert "transform job dogbreed-tr-4: Completed" in out
    bucket, key = predictions.split_s3(f"{RESULTS}-4/predictions.jsonl")
    assert s3().head_object(Bucket=bucket, Key=key)["ContentType"] == "application/jsonlines"


def test_a_failed_job_says_why_and_lists_the_images_without_output(aws, capsys):
    photos(PHOTOS)
    reason = "ClientError: See job logs for more information"
    play_sagemaker(aws, answered=["a.jpg", "sub/b.png"], status="Failed", failure=reason)
    code = run(aws, "transform", "--image", SERVE, "--role", ROLE, "--model", f"{OUT}/j/output/model.tar.gz",
               "--input", PHOTOS, "--output", f"{RESULTS}-5", "--job-name", "dogbreed-tr-5")
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == f"error: transform job dogbreed-tr-5 Failed: {reason}\n"
    missing = ("no output: batch transform failed on this image "
               "(the job's log: /aws/sagemaker/TransformJobs, streams dogbreed-tr-5/...)")
    assert lines(f"{RESULTS}-5/predictions.jsonl") == [
        {"key": "a.jpg", **ANSWERS["a.jpg"]}, {"key": "c.jpg", "error": missing},
        {"key": "sub/b.png", **ANSWERS["sub/b.png"]}]
    assert captured.out.splitlines()[-2:] == [
        f"predictions: {RESULTS}-5/predictions.jsonl (3 images: 2 predicted, 1 failed)",
        f"  failed: c.jpg: {missing}"]


def test_no_wait_then_attach_waits_and_gathers(aws, capsys, monkeypatch):
    photos(PHOTOS)
    assert run(aws, "transform", "--image", SERVE, "--role", ROLE, "--model", f"{OUT}/j/output/model.tar.gz",
               "--input", PHOTOS, "--output", f"{RESULTS}-6", "--job-name", "dogbreed-tr-6", "--no-wait") == 0
    for key in ANSWERS:  # SageMaker's work, later
        put(f"{RESULTS}-6/{key}.out", json.dumps(ANSWERS[key]).encode())
    put(f"{RESULTS}-6/old/stray.jpg.out", b"{}")
    # The job runs a while: one poll says InProgress, the next finds moto's Completed.
    canned = ("api.sagemaker", "DescribeTransformJob")
    aws.canned[canned] = {**aws.params("CreateTransformJob"), "TransformJobStatus": "InProgress",
                          "TransformJobArn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/x",
                          "CreationTime": 0}
    monkeypatch.setattr(transform.time, "sleep", lambda seconds: aws.canned.pop(canned))
    capsys.readouterr()
    aws.calls.clear()
    assert run(aws, "transform", "--attach", "dogbreed-tr-6") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["transform job dogbreed-tr-6: InProgress", "transform job dogbreed-tr-6: Completed"]
    assert out[-1] == "  1 .out file(s) match no input, e.g. old/stray.jpg.out"
    assert [line["key"] for line in lines(f"{RESULTS}-6/predictions.jsonl")] == sorted(ANSWERS)
    assert {"CreateModel", "CreateTransformJob"}.isdisjoint(aws.operations())


def test_gather_reads_the_endpoints_answers_and_errors(tmp_path):
    """What the SDK's local mode may leave: an error answer, something not JSON, nothing."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    for key in ("ok.jpg", "bad.jpg", "garbled.jpg", "lost.jpg", "custom.jpg", "sub/ok.png"):
        (inputs / key).parent.mkdir(parents=True, exist_ok=True)
        (inputs / key).write_bytes(b"...")
    (outputs / "sub").mkdir(parents=True)
    answer = {"predicted_label": "Löwchen", "top_k": []}
    (outputs / "ok.jpg.out").write_text(json.dumps(answer))
    (outputs / "sub" / "ok.png.out").write_text(json.dumps(answer))
    (outputs / "bad.jpg.out").write_text('{"error": "could not read the body as an image"}')
    (outputs / "garbled.jpg.out").write_bytes(b"<html>502</html>")
    (outputs / "custom.jpg.out").write_text('[0.1, 0.9]')
    summary = predictions.gather(predictions.LocalStore(inputs, outputs), "no output", {"lost.jpg": "too big"})
    written = (outputs / "predictions.jsonl").read_text(encoding="utf-8")
    assert "Löwchen" in written  # UTF-8, not \u escapes
    assert [json.loads(line) for line in written.splitlines()] == [
        {"key": "bad.jpg", "error": "the endpoint answered: could not read the body as an image"},
        {"key": "custom.jpg", "output": [0.1, 0.9]},
        {"key": "garbled.jpg", "error": "the output is not JSON: b'<html>502</html>'"},
        {"key": "lost.jpg", "error": "too big"},
        {"key": "ok.jpg", **answer},
        {"key": "sub/ok.png", **answer},
    ]
    assert [p.key for p in summary.failed] == ["bad.jpg", "garbled.jpg", "lost.jpg"]
    assert summary.location == str(outputs / "predictions.jsonl") and summary.unmatched == []


def test_gather_with_maps_keeps_each_explanation_whole(tmp_path):
    """What transform --local leaves with --explain: maps, an answer without one, a 422 written as an answer."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    for key in ("a.jpg", "c.jpg", "old-model.jpg", "custom.jpg"):
        (inputs / key).write_bytes(b"...")
    (outputs / "a.jpg.out").write_text(json.dumps(EXPLAINED["a.jpg"]))
    (outputs / "c.jpg.out").write_text(json.dumps(ANSWERS["c.jpg"]))
    (outputs / "old-model.jpg.out").write_text('{"error": "this model cannot give class activation maps"}')
    (outputs / "custom.jpg.out").write_text('[0.1, 0.9]')
    summary = predictions.gather(predictions.LocalStore(inputs, outputs), "no output", explain=True)
    records = {r["key"]: r for r in map(json.loads, (outputs / "predictions.jsonl").read_text().splitlines())}
    assert records["a.jpg"] == {"key": "a.jpg", **EXPLAINED["a.jpg"]}
    assert records["a.jpg"]["explanation"]["box"] == [100.0, 110.0, 200.0, 210.0]
    assert records["old-model.jpg"] == {"key": "old-model.jpg",
                                        "error": "the endpoint answered: this model cannot give class activation maps"}
    for key in ("c.jpg", "custom.jpg"):
        assert records[key]["error"].startswith("the answer has no 'explanation'")
    assert [p.key for p in summary.failed] == ["c.jpg", "custom.jpg", "old-model.jpg"]


MODEL = f"{OUT}/j/output/model.tar.gz"
BASE = ["transform", "--image", SERVE, "--role", ROLE, "--model", MODEL, "--input", PHOTOS, "--output", RESULTS]
BAD_INPUT = [
    ("no model", ["transform", "--image", SERVE, "--role", ROLE, "--input", PHOTOS, "--output", RESULTS],
     "transform needs --model (or --attach JOB)"),
    ("no input or output", ["transform", "--image", SERVE, "--role", ROLE, "--model", MODEL],
     "transform needs --input, --output"),
    ("attach with explain", ["transform", "--attach", "dogbreed-tr-1", "--explain"],
     "--attach JOB gathers that job's own output: drop --explain"),
    ("bad input URI", [*BASE, "--input", "s3:/dogbreed-data/photos"], "--input 's3:/dogbreed-data/photos' is not an S3 URI"),
    ("output inside input", [*BASE, "--output", f"{PHOTOS}/predictions"], "is inside --input"),
    ("output is input", [*BASE, "--output", f"{PHOTOS}/"], "is inside --input"),
    ("payload 0", [*BASE, "--max-payload-mb", "0"], "--max-payload-mb must be between 1 and 100"),
    ("payload 101", [*BASE, "--max-payload-mb", "101"], "--max-payload-mb must be between 1 and 100"),
    ("no concurrency", [*BASE, "--max-concurrent-transforms", "0"], "--max-concurrent-transforms must be at least 1"),
    ("text content type", [*BASE, "--content-type", "text/plain"], "--content-type 'text/plain'"),
    ("non-ECR image", [*BASE, "--image", "dogbreed-serve:latest"], "not an ECR image URI"),
    ("no image", [*BASE, "--image", ""], "no serving image"),
    ("no role", [*BASE, "--role", ""], "no execution role"),
    ("bad job name", [*BASE, "--job-name", "tr_1"], "--job-name 'tr_1'"),
    ("model not a tarball", [*BASE, "--model", "s3://b-1/model/"], "must point at a model.tar.gz"),
    ("bad instance type", [*BASE, "--instance-type", "m5.xlarge"], "not a SageMaker instance type"),
    ("no instance", [*BASE, "--instance-count", "0"], "--instance-count must be at least 1"),
    ("attach with a model", ["transform", "--attach", "dogbreed-tr-1", "--model", MODEL], "drop --model"),
    ("attach a bad name", ["transform", "--attach", "tr_1"], "--attach (a transform job's name) 'tr_1'"),
    ("attach without waiting", ["transform", "--attach", "dogbreed-tr-1", "--no-wait"], "drop --no-wait"),
    ("local model missing", ["transform", "--local", "--image", "dogbreed-serve:latest", "--model", "/nonexistent.tar.gz",
                             "--input", str(REPO), "--output", "/tmp/x"], "no such local model.tar.gz"),
    ("local input missing", ["transform", "--local", "--image", "dogbreed-serve:latest",
                             "--model", str(REPO / "pyproject.toml"), "--input", "/nonexistent", "--output", "/tmp/x"],
     "--input '/nonexistent': no such local directory"),
    ("local output a file", ["transform", "--local", "--image", "dogbreed-serve:latest",
                             "--model", str(REPO / "pyproject.toml"), "--input", str(REPO / "docs"),
                             "--output", str(REPO / "pyproject.toml")], "is a file, not a directory"),
    ("local no-wait", ["transform", "--local", "--no-wait", "--image", "dogbreed-serve:latest",
                       "--model", str(REPO / "pyproject.toml"), "--input", str(REPO / "docs"), "--output", "/tmp/x"],
     "--no-wait needs a SageMaker job"),
    ("local two instances", ["transform", "--local", "--instance-count", "2", "--image", "dogbreed-serve:latest",
                             "--model", str(REPO / "pyproject.toml"), "--input", str(REPO / "docs"),
                             "--output", "/tmp/x"], "--instance-count must be 1"),
]


@pytest.mark.parametrize("case, argv, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_arguments_fail_clearly_before_any_api_call(aws, capsys, case, argv, message):
    assert run(aws, *argv) == 2, case
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert_names_real_flags("transform", err)
    assert aws.calls == [], f"{case}: API calls were made: {aws.operations()}"


def test_what_only_aws_can_tell_fails_before_anything_is_created(aws, capsys):
    args = ["--image", SERVE, "--role", ROLE, "--model", MODEL, "--job-name", "dogbreed-tr-7"]
    put(f"{RESULTS}-7/old.jpg.out", b"{}")
    photos(PHOTOS)
    assert run(aws, "transform", *args, "--input", f"{PHOTOS}-none", "--output", f"{RESULTS}-8") == 2
    assert capsys.readouterr().err == f"error: --input {PHOTOS}-none/ holds no objects\n"
    assert run(aws, "transform", *args, "--input", PHOTOS, "--output", f"{RESULTS}-7") == 2
    assert "already holds objects" in capsys.readouterr().err
    other_region = SERVE.replace(REGION, "eu-west-1")
    assert run(aws, "transform", *args, "--image", other_region, "--input", PHOTOS, "--output", f"{RESULTS}-8") == 2
    assert "SageMaker needs the image in the job's region" in capsys.readouterr().err
    aws.canned[("api.sagemaker", "DescribeTrainingJob")] = {
        "TrainingJobName": "dogbreed-tr-running", "TrainingJobStatus": "InProgress",
        "ModelArtifacts": {"S3ModelArtifacts": f"{OUT}/x/output/model.tar.gz"}}
    assert run(aws, "transform", *args, "--model", "dogbreed-tr-running", "--input", PHOTOS,
               "--output", f"{RESULTS}-8") == 2
    assert "the training job is InProgress, not Completed" in capsys.readouterr().err
    assert {"CreateModel", "CreateTransformJob"}.isdisjoint(aws.operations())


# ---- SDK local mode, the real serving image, real photos ------------------------------------

def containers_on_port(image: str, port: int) -> list[str]:
    """Containers of ``image``, running or stopped, that publish ``port`` (what the SDK's compose file does)."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"ancestor={image}"], capture_output=True,
                         text=True).stdout.split()
    if not ids:
        return []
    inspected = subprocess.run(["docker", "inspect", "--format", "{{.Name}} {{json .HostConfig.PortBindings}}", *ids],
                               capture_output=True, text=True).stdout.splitlines()
    return [line for line in inspected if f'"HostPort":"{port}"' in line]


@pytest.fixture
def model_tarball(tmp_path) -> Path:
    """A random-weight ResNet18 with three breeds, exported by the training code (in .venv), packed."""
    model_dir = tmp_path / "model"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
              "from tests.unit.serving.conftest import make_model_dir; make_model_dir(Path(sys.argv[2]))")
    proc = run_in_training_venv("-c", script, str(REPO), str(model_dir), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return tarball


@pytest.fixture
def photo_folder(dogs3, tmp_path) -> Path:
    """Two real photos per breed in their class folders, a truncated JPEG and a file too large to send."""
    folder = tmp_path / "photos"
    for class_dir in sorted((dogs3 / "valid").iterdir()):
        (folder / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.glob("*.jpg"))[:2]:
            shutil.copy(photo, folder / class_dir.name / photo.name)
    first = next(folder.rglob("*.jpg")).read_bytes()
    (folder / "broken.jpg").write_bytes(first[: len(first) // 3])
    (folder / "huge.jpg").write_bytes(first + b"\0" * (1024 * 1024))  # over --max-payload-mb 1
    return folder


@pytest.mark.docker
@pytest.mark.slow
def test_transform_local_predicts_each_real_photo_under_its_key(aws_env, serve_image, model_tarball, photo_folder,
                                                                tmp_path, capfd):
    """With --explain: the same run, one map more per image (an einsum, no second container)."""
    from dogbreed.images import open_image

    output = tmp_path / "results"
    port = free_port()
    code = cli.main(["transform", "--local", "--image", serve_image, "--model", str(model_tarball),
                     "--input", str(photo_folder), "--output", f"file://{output}", "--max-payload-mb", "1",
                     "--port", str(port), "--job-name", "dogbreed-local-tr", "--explain"])
    out = capfd.readouterr().out
    assert code == 1, out[-3000:]  # two files have no prediction
    records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    keys = sorted(p.relative_to(photo_folder).as_posix() for p in photo_folder.rglob("*") if p.is_file())
    assert [r["key"] for r in records] == keys
    by_key = {r["key"]: r for r in records}
    for key in keys:
        if key in ("broken.jpg", "huge.jpg"):
            continue
        record = by_key[key]
        assert record["predicted_label"] in BREEDS, record
        assert {t["label"] for t in record["top_k"]} == BREEDS
        assert (output / f"{key}.out").is_file()  # where batch transform would write it
        # DOGBREED_EXPLAIN=cam reached the container: the top class's map, in the photo's pixels.
        explanation = record["explanation"]
        assert explanation["label"] == record["predicted_label"]
        width, height = open_image(photo_folder / key).size
        x0, y0, x1, y1 = explanation["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (explanation["box"], width, height)
        grid = explanation["grid"]
        assert len(grid) > 1 and {len(row) for row in grid} == {len(grid[0])}
    assert by_key["broken.jpg"]["error"].startswith("the endpoint answered: could not read the body as an image")
    assert by_key["huge.jpg"]["error"].endswith("over --max-payload-mb 1, not sent")
    assert f"predictions: {output / 'predictions.jsonl'} (8 images: 6 predicted, 2 failed)" in out
    assert containers_on_port(serve_image, port) == [], "the transform job's container is still there"
