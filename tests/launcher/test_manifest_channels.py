"""Splits given as a Ground Truth output manifest or a .lst, and --input-mode, as the requests moto receives."""

from __future__ import annotations

import json

import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed.launcher import cli, local_tuning, training_jobs  # noqa: E402
from tests.launcher.aws import RecordingSession  # noqa: E402
from tests.launcher.cli_args import IMAGE, OUT, ROLE, TRAIN_ARGS, assert_names_real_flags  # noqa: E402
from tests.launcher.conftest import REGION  # noqa: E402

BUCKET = "dogbreed-labels"
GT = f"s3://{BUCKET}/ground-truth/dogs/manifests/output/output.manifest"
SPLITS = ["--valid", "s3://dogbreed-data/dogImages/valid", "--test", "s3://dogbreed-data/dogImages/test"]
COMMON = ["--image", IMAGE, "--role", ROLE, "--output", OUT, *SPLITS]


@pytest.fixture
def aws(aws_env) -> RecordingSession:
    return RecordingSession(REGION)


def run(aws: RecordingSession, *argv: str) -> int:
    return cli.main(list(argv), session_factory=aws.factory)


def put_manifest(aws: RecordingSession, uri: str, lines: list[str]) -> None:
    bucket, key = uri[len("s3://"):].split("/", 1)
    s3 = aws.session.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body="\n".join(lines).encode())


def record(ref: str, label: int) -> str:
    return json.dumps({"source-ref": ref, "breed": label,
                       "breed-metadata": {"class-name": f"breed {label}", "type": "groundtruth/image-classification"}})


def channels(request: dict) -> dict[str, tuple[str, str, str]]:
    return {c["ChannelName"]: (c["DataSource"]["S3DataSource"]["S3DataType"], c["DataSource"]["S3DataSource"]["S3Uri"],
                               c["InputMode"]) for c in request["InputDataConfig"]}


def test_a_ground_truth_manifest_becomes_its_images_folder_and_a_manifest_channel(aws):
    put_manifest(aws, GT, [record(f"s3://{BUCKET}/photos/beagle/1.jpg", 0),
                           record(f"s3://{BUCKET}/photos/poodle/2.jpg", 1), ""])
    assert run(aws, "train", *COMMON, "--train", GT, "--job-name", "dogbreed-gt-1", "--no-debugger") == 0
    request = aws.params("CreateTrainingJob")
    assert channels(request) == {
        "train": ("S3Prefix", f"s3://{BUCKET}/photos/", "File"),
        "train_manifest": ("S3Prefix", GT, "File"),
        "valid": ("S3Prefix", "s3://dogbreed-data/dogImages/valid", "File"),
        "test": ("S3Prefix", "s3://dogbreed-data/dogImages/test", "File"),
    }
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert aws.operations().index("GetObject") < aws.operations().index("CreateTrainingJob")


def test_a_lst_is_read_from_its_folder_without_an_s3_call(aws):
    lst = "s3://dogbreed-data/lst/train.lst"
    assert run(aws, "train", *COMMON, "--train", lst, "--job-name", "dogbreed-lst-1", "--no-debugger",
               "--input-mode", "FastFile") == 0
    request = aws.params("CreateTrainingJob")
    found = channels(request)
    assert found["train"] == ("S3Prefix", "s3://dogbreed-data/lst/", "FastFile")
    assert found["train_manifest"] == ("S3Prefix", lst, "File")
    assert found["valid"][2] == found["test"][2] == "FastFile"
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"
    assert "GetObject" not in aws.operations()


@pytest.mark.parametrize(
    "lines, message",
    [
        ([record("s3://a-bucket/x/1.jpg", 0), record("s3://b-bucket/x/2.jpg", 0)], "2 buckets (a-bucket, b-bucket)"),
        ([record("s3://a-bucket/x/1.jpg", 0), "{not json"], "output.manifest:2: not a Ground Truth record"),
        ([], "the manifest has no records"),
    ],
)
def test_a_manifest_the_launcher_cannot_place_creates_no_job(aws, capsys, lines, message):
    put_manifest(aws, GT, lines)
    assert run(aws, "train", *COMMON, "--train", GT) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "CreateTrainingJob" not in aws.operations()


def test_a_missing_manifest_is_a_one_line_error(aws, capsys):
    aws.session.client("s3").create_bucket(Bucket=BUCKET)
    assert run(aws, "train", *COMMON, "--train", f"s3://{BUCKET}/nothing/here.manifest") != 0
    err = capsys.readouterr().err
    assert "--train s3://dogbreed-labels/nothing/here.manifest: cannot read the manifest" in err
    assert "CreateTrainingJob" not in aws.operations()


def test_features_jobs_read_images_once_so_default_to_fastfile(aws):
    assert run(aws, "features", *TRAIN_ARGS, "--pretrained", "s3://dogbreed-data/weights",
               "--job-name", "dogbreed-feat-mode") == 0
    request = aws.params("CreateTrainingJob")
    modes = {name: mode for name, (_, _, mode) in channels(request).items()}
    assert modes == {"train": "FastFile", "valid": "FastFile", "test": "FastFile", "pretrained": "File"}
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"


def test_features_may_ask_for_file_and_tune_for_fastfile(aws):
    assert run(aws, "features", *TRAIN_ARGS, "--input-mode", "File", "--job-name", "dogbreed-feat-file") == 0
    assert {c["InputMode"] for c in aws.params("CreateTrainingJob")["InputDataConfig"]} == {"File"}
    put_manifest(aws, GT, [record(f"s3://{BUCKET}/photos/beagle/1.jpg", 0)])
    assert run(aws, "tune", *COMMON, "--train", GT, "--input-mode", "FastFile", "--name", "dogbreed-hpo-ff") == 0
    definition = aws.params("CreateHyperParameterTuningJob")["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"
    assert channels(definition) == {
        "train": ("S3Prefix", f"s3://{BUCKET}/photos/beagle/", "FastFile"),
        "train_manifest": ("S3Prefix", GT, "File"),
        "valid": ("S3Prefix", "s3://dogbreed-data/dogImages/valid", "FastFile"),
        "test": ("S3Prefix", "s3://dogbreed-data/dogImages/test", "FastFile"),
    }


def test_input_mode_is_refused_locally_and_checked(aws, capsys, tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / split).mkdir()
    local = ["--image", "dogbreed-train:latest", "--train", str(tmp_path / "train"), "--valid",
             str(tmp_path / "valid"), "--test", str(tmp_path / "test"), "--output", str(tmp_path / "out")]
    assert run(aws, "train", "--local", *local, "--input-mode", "FastFile") != 0
    message = capsys.readouterr().err
    assert "--input-mode is for SageMaker jobs" in message
    assert_names_real_flags("train", message)
    with pytest.raises(SystemExit):
        run(aws, "train", *TRAIN_ARGS, "--input-mode", "Pipe")
    assert aws.calls == []


def test_a_local_manifest_file_stands_for_its_folder(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / split).mkdir()
    (tmp_path / "train" / "train.lst").write_text("0\t0\ta.jpg\n")
    spec = training_jobs.TrainingSpec(
        image="dogbreed-train:latest", output=str(tmp_path / "out"), local=True,
        channels={"train": str(tmp_path / "train" / "train.lst"), "valid": str(tmp_path / "valid"),
                  "test": str(tmp_path / "test")})
    assert spec.channels["train"] == str(tmp_path / "train")
    tune = local_tuning.LocalTuningSpec(image="dogbreed-train:latest", output=str(tmp_path / "tuned"),
                                        channels={**spec.channels, "train": str(tmp_path / "train" / "train.lst")})
    assert tune.channels["train"] == str(tmp_path / "train")  # mounted as the train channel
    (tmp_path / "train" / "valid.lst").write_text("0\t0\tb.jpg\n")
    with pytest.raises(training_jobs.LauncherError, match="also holds valid.lst"):
        training_jobs.TrainingSpec(image="dogbreed-train:latest", output=str(tmp_path / "out"), local=True,
                                   channels={"train": str(tmp_path / "train" / "train.lst"),
                                             "valid": str(tmp_path / "valid"), "test": str(tmp_path / "test")})
