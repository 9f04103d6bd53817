"""Incremental training: ``train --from`` and ``tune --from`` give the job an earlier model as its ``model`` channel.

SageMaker requests go to moto through botocore's validation (moto completes a training job at
once, so a job created here is one to start from); tune --local is checked as the ``docker run``
it would start, with subprocess.Popen replaced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed.launcher import cli, local_tuning, training_jobs  # noqa: E402
from dogbreed.input_channels import SPLIT_CHANNELS
from tests.launcher.aws import RecordingSession  # noqa: E402
from tests.launcher.cli_args import OUT, TRAIN_ARGS, assert_names_real_flags  # noqa: E402
from tests.launcher.conftest import REGION  # noqa: E402

MODEL = f"{OUT}/dogbreed-old-1/output/model.tar.gz"


@pytest.fixture
def aws(aws_env) -> RecordingSession:
    return RecordingSession(REGION)


def run(aws: RecordingSession, *argv: str) -> int:
    return cli.main(list(argv), session_factory=aws.factory)


def model_channel(uri: str) -> dict:
    return {
        "ChannelName": "model",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                        "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": "File",
    }


def channels(request: dict) -> dict[str, dict]:
    return {c["ChannelName"]: c for c in request["InputDataConfig"]}


def test_train_from_a_job_gets_its_model_tarball_as_the_model_channel(aws):
    assert run(aws, "train", *TRAIN_ARGS, "--job-name", "dogbreed-old-1") == 0
    aws.calls.clear()
    assert run(aws, "train", *TRAIN_ARGS, "--from", "dogbreed-old-1", "--job-name", "dogbreed-new-1") == 0
    # The old job is looked up before the create (the SDK describes the new one after it).
    assert aws.calls[0].operation == "DescribeTrainingJob"
    assert aws.calls[0].params == {"TrainingJobName": "dogbreed-old-1"}
    request = aws.params("CreateTrainingJob")
    assert channels(request)["model"] == model_channel(MODEL)
    assert set(channels(request)) == {"train", "valid", "test", "model"}
    assert request["ResourceConfig"]["InstanceType"] == training_jobs.DEFAULT_INSTANCE_TYPE


def test_train_from_an_s3_uri_needs_no_lookup(aws):
    uri = "s3://dogbreed-models/breeds-v1/model.tar.gz"
    assert run(aws, "train", *TRAIN_ARGS, "--from", uri, "--job-name", "dogbreed-new-2") == 0
    assert aws.operations()[0] == "CreateTrainingJob"  # no lookup first
    assert channels(aws.params("CreateTrainingJob"))["model"] == model_channel(uri)


def test_tune_from_a_job_gives_every_trial_the_model_channel(aws):
    assert run(aws, "train", *TRAIN_ARGS, "--job-name", "dogbreed-old-1") == 0
    assert run(aws, "tune", *TRAIN_ARGS, "--from", "dogbreed-old-1", "--name", "dogbreed-hpo-m1") == 0
    definition = aws.params("CreateHyperParameterTuningJob")["TrainingJobDefinition"]
    assert channels(definition)["model"] == model_channel(MODEL)


def test_a_job_that_is_not_completed_is_refused_before_any_create(aws, capsys):
    aws.canned[("api.sagemaker", "DescribeTrainingJob")] = {
        "TrainingJobName": "dogbreed-old-2", "TrainingJobStatus": "InProgress",
    }
    assert run(aws, "train", *TRAIN_ARGS, "--from", "dogbreed-old-2") == 2
    err = capsys.readouterr().err
    assert err == "error: --from dogbreed-old-2: the training job is InProgress, not Completed\n"
    assert aws.operations() == ["DescribeTrainingJob"]


BAD_INPUT = [
    ("a bad job name", ["train", *TRAIN_ARGS, "--from", "old_job!"], "--from"),
    ("a bad URI", ["tune", *TRAIN_ARGS, "--from", "s3:/b/model.tar.gz"], "not an S3 URI"),
]


@pytest.mark.parametrize("case, argv, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_from_fails_before_any_api_call(aws, capsys, case, argv, message):
    assert run(aws, *argv) == 2, case
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert_names_real_flags(argv[0], err)
    assert aws.calls == []


@pytest.fixture
def local_data(tmp_path) -> dict[str, Path]:
    for name in ("train", "valid", "test", "old"):
        (tmp_path / name).mkdir()
    (tmp_path / "old" / "model.tar.gz").write_bytes(b"the archive is the job's to read")
    return {name: (tmp_path / name).resolve() for name in ("train", "valid", "test", "old")}


def local_spec(data: dict[str, Path], model_from: str) -> training_jobs.TrainingSpec:
    return training_jobs.TrainingSpec(
        image="dogbreed-train:latest",
        channels={c: str(data[c]) for c in SPLIT_CHANNELS},
        output=str(data["old"].parent / "out"),
        local=True,
        model_from=model_from,
    )


def test_local_train_from_a_model_tarball_mounts_its_folder(local_data):
    archive = local_data["old"] / "model.tar.gz"
    assert local_spec(local_data, str(archive)).channels["model"] == str(local_data["old"])
    assert local_spec(local_data, f"file://{local_data['old']}").channels["model"] == str(local_data["old"])


def test_local_train_from_a_folder_of_several_archives_is_refused(local_data):
    (local_data["old"] / "output.tar.gz").write_bytes(b"")
    with pytest.raises(training_jobs.LauncherError, match=r"also holds output\.tar\.gz; move the model\.tar\.gz"):
        local_spec(local_data, str(local_data["old"] / "model.tar.gz"))
    with pytest.raises(training_jobs.LauncherError, match=r"--from '/nonexistent/model\.tar\.gz': no such local"):
        local_spec(local_data, "/nonexistent/model.tar.gz")


def test_tune_local_from_a_model_tarball_mounts_it_in_the_model_channel(local_data, tmp_path, monkeypatch):
    commands = []

    class FakePopen:  # records the command; runs nothing
        def __init__(self, args, **kwargs):
            commands.append(list(args))

        def wait(self):
            return 0

    monkeypatch.setattr(local_tuning.subprocess, "Popen", FakePopen)
    archive = local_data["old"] / "model.tar.gz"
    argv = ["tune", "--local", "--image", "dogbreed-train:latest", *[
        arg for c in SPLIT_CHANNELS for arg in (f"--{c}", str(local_data[c]))
    ], "--output", str(tmp_path / "tuned"), "--from", str(archive)]
    assert cli.main(argv) == 0
    [command] = commands
    assert f"{archive}:/opt/ml/input/data/model/model.tar.gz:ro" in command
