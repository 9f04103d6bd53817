"""Feature caches: the features job, --features-from on tune and train, and tune --local.

SageMaker requests go to moto through botocore's validation (a canned DescribeTrainingJob
stands for a features job in a given state); tune --local is checked as the exact
``docker run`` it would start, with subprocess.Popen replaced, so no Docker runs here.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed.launcher import cli, local_tuning, training_jobs  # noqa: E402
from tests.launcher.aws import RecordingSession  # noqa: E402
from tests.launcher.conftest import REGION  # noqa: E402
from tests.launcher.cli_args import IMAGE, OUT, TRAIN_ARGS, assert_names_real_flags  # noqa: E402

FEATURES_JOB = "dogbreed-feat-1"
ARCHIVE = f"{OUT}/{FEATURES_JOB}/output/output.tar.gz"


@pytest.fixture
def aws(aws_env) -> RecordingSession:
    return RecordingSession(REGION)


def run(aws: RecordingSession, *argv: str) -> int:
    return cli.main(list(argv), session_factory=aws.factory)


def features_job(aws: RecordingSession, status: str = "Completed", **hyperparameters: str) -> None:
    """DescribeTrainingJob answers with a features job in ``status`` (moto's jobs cannot be made so)."""
    aws.canned[("api.sagemaker", "DescribeTrainingJob")] = {
        "TrainingJobName": FEATURES_JOB,
        "TrainingJobStatus": status,
        "HyperParameters": hyperparameters or {"features": "on", "features_only": "true"},
        "ModelArtifacts": {"S3ModelArtifacts": f"{OUT}/{FEATURES_JOB}/output/model.tar.gz"},
    }


def channels(request: dict) -> dict[str, dict]:
    return {c["ChannelName"]: c for c in request["InputDataConfig"]}


FEATURES_CHANNEL = {
    "ChannelName": "features",
    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": ARCHIVE,
                                    "S3DataDistributionType": "FullyReplicated"}},
    "InputMode": "File",
}


# --- the features job ----------------------------------------------------------------------

def test_features_starts_a_job_that_only_writes_the_cache(aws, capsys):
    code = run(aws, "features", *TRAIN_ARGS, "--pretrained", "s3://dogbreed-data/weights", "--hp", "feature_views=4",
               "--hp", "arch=resnet50", "--job-name", FEATURES_JOB)
    assert code == 0
    request = aws.params("CreateTrainingJob")
    assert request["HyperParameters"] == {"feature_views": "4", "arch": "resnet50", "features": "on",
                                          "features_only": "true"}
    assert request["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert set(channels(request)) == {"train", "valid", "test", "pretrained"}
    for key in ("DebugHookConfig", "DebugRuleConfigurations", "ProfilerConfig", "ProfilerRuleConfigurations"):
        assert key not in request, key  # nothing trains: no Debugger
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"feature cache: {ARCHIVE} (once the job is Completed)"
    assert out[2] == "next: " + shlex.join([
        "python", "-m", "dogbreed.launcher", "tune", "--features-from", FEATURES_JOB,
        "--train", "s3://dogbreed-data/dogImages/train", "--valid", "s3://dogbreed-data/dogImages/valid",
        "--test", "s3://dogbreed-data/dogImages/test", "--pretrained", "s3://dogbreed-data/weights",
        "--output", OUT, "--hp", "feature_views=4", "--hp", "arch=resnet50"])


def test_features_local_runs_a_local_job_with_features_only(aws, monkeypatch, tmp_path, capsys):
    for split in ("train", "valid", "test"):
        (tmp_path / split).mkdir()
    seen = []

    def fake_train_local(spec):
        seen.append(spec)
        return Path(spec.output) / "compressed_artifacts" / "model.tar.gz"

    monkeypatch.setattr(training_jobs, "train_local", fake_train_local)
    code = run(aws, "features", "--local", "--image", "dogbreed-train:latest", "--train", str(tmp_path / "train"),
               "--valid", str(tmp_path / "valid"), "--test", str(tmp_path / "test"), "--output", str(tmp_path / "sm"))
    assert code == 0
    [spec] = seen
    assert spec.hyperparameters == {"features": "on", "features_only": "true"}
    assert spec.instance_type == "local" and spec.debugger is False
    out = capsys.readouterr().out.splitlines()
    cache = tmp_path / "sm" / "artifacts" / "output" / "data" / "features"
    assert out[0] == f"feature cache: {cache}"
    assert out[1].startswith(f"next: python -m dogbreed.launcher tune --features-from {cache} --local ")
    assert aws.calls == []


# --- tune / train --features-from ----------------------------------------------------------------

def test_tune_features_from_a_job_reads_its_archive_on_a_cpu_instance(aws, capsys):
    features_job(aws)
    code = run(aws, "tune", *TRAIN_ARGS, "--features-from", FEATURES_JOB, "--hp", "epochs=5", "--max-jobs", "20",
               "--max-parallel-jobs", "4", "--name", "dogbreed-hpo-f1")
    assert code == 0
    assert aws.params("DescribeTrainingJob") == {"TrainingJobName": FEATURES_JOB}
    ops = aws.operations()
    assert ops.index("DescribeTrainingJob") < ops.index("CreateHyperParameterTuningJob")
    definition = aws.params("CreateHyperParameterTuningJob")["TrainingJobDefinition"]
    assert channels(definition)["features"] == FEATURES_CHANNEL
    assert set(channels(definition)) == {"train", "valid", "test", "features"}
    assert definition["StaticHyperParameters"] == {"epochs": "5", "features": "on"}
    assert definition["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert f"trials on ml.m5.xlarge read the feature cache {ARCHIVE}" in capsys.readouterr().out


def test_tune_features_from_an_s3_uri_needs_no_lookup_and_keeps_the_instance_type(aws):
    code = run(aws, "tune", *TRAIN_ARGS, "--features-from", ARCHIVE, "--instance-type", "ml.c5.2xlarge",
               "--name", "dogbreed-hpo-f2")
    assert code == 0
    assert "DescribeTrainingJob" not in aws.operations()
    definition = aws.params("CreateHyperParameterTuningJob")["TrainingJobDefinition"]
    assert channels(definition)["features"] == FEATURES_CHANNEL
    assert definition["StaticHyperParameters"] == {"features": "on"}
    assert definition["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge"


def test_tune_without_features_from_stays_on_the_gpu_without_a_features_channel(aws):
    assert run(aws, "tune", *TRAIN_ARGS, "--name", "dogbreed-hpo-f3") == 0
    definition = aws.params("CreateHyperParameterTuningJob")["TrainingJobDefinition"]
    assert set(channels(definition)) == {"train", "valid", "test"}
    assert definition["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert "StaticHyperParameters" not in definition  # none at all: the SDK leaves the empty map out


def test_train_features_from_a_job_is_one_cpu_job_on_the_cache(aws):
    features_job(aws)
    assert run(aws, "train", *TRAIN_ARGS, "--features-from", FEATURES_JOB, "--hp", "lr=0.01",
               "--job-name", "dogbreed-head-1") == 0
    request = aws.params("CreateTrainingJob")
    assert channels(request)["features"] == FEATURES_CHANNEL
    assert request["HyperParameters"] == {"lr": "0.01", "features": "on"}
    assert request["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"


@pytest.mark.parametrize("status", ["InProgress", "Failed", "Stopped"])
def test_a_features_job_that_is_not_completed_is_refused_before_any_create(aws, capsys, status):
    features_job(aws, status=status)
    assert run(aws, "tune", *TRAIN_ARGS, "--features-from", FEATURES_JOB) == 2
    err = capsys.readouterr().err
    assert err == f"error: training job {FEATURES_JOB} is {status}: its feature cache is there once it is Completed\n"
    assert aws.operations() == ["DescribeTrainingJob"]


def test_a_job_that_wrote_no_cache_is_refused(aws, capsys):
    features_job(aws, features="off")
    assert run(aws, "train", *TRAIN_ARGS, "--features-from", FEATURES_JOB) == 2
    assert "wrote no feature cache" in capsys.readouterr().err
    assert aws.operations() == ["DescribeTrainingJob"]


def test_a_json_quoted_auto_with_the_default_freeze_counts_as_a_cache(aws):
    features_job(aws, features='"auto"', epochs='"3"')
    assert run(aws, "tune", *TRAIN_ARGS, "--features-from", FEATURES_JOB, "--name", "dogbreed-hpo-f4") == 0
    assert "CreateHyperParameterTuningJob" in aws.operations()


# --- tune --local ----------------------------------------------------------------------------

class FakePopen:
    """subprocess.Popen that records its command and 'exits' with ``code``; runs nothing."""

    commands: list[list[str]] = []
    code = 0

    def __init__(self, args, **kwargs):
        assert kwargs == {}, kwargs  # the container's output goes straight to this terminal
        FakePopen.commands.append(list(args))

    def wait(self):
        return FakePopen.code


@pytest.fixture
def docker(monkeypatch):
    FakePopen.commands, FakePopen.code = [], 0
    monkeypatch.setattr(local_tuning.subprocess, "Popen", FakePopen)
    return FakePopen


@pytest.fixture
def local_data(tmp_path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("train", "valid", "test", "weights", "cache")}
    for path in paths.values():
        path.mkdir()
    paths["pth"] = paths["weights"] / "resnet50-0676ba61.pth"
    paths["pth"].write_bytes(b"not really weights")
    paths["archive"] = tmp_path / "output.tar.gz"
    paths["archive"].write_bytes(b"not really an archive")
    return {name: path.resolve() for name, path in paths.items()}


def no_aws():
    raise AssertionError("tune --local must not touch AWS")


def local_args(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["tune", "--local", "--image", "dogbreed-train:latest", "--train", str(data["train"]),
            "--valid", str(data["valid"]), "--test", str(data["test"]), "--output", str(out), *extra]


def test_tune_local_runs_dogbreed_tune_in_the_image_with_the_sagemaker_layout(docker, local_data, tmp_path, capsys):
    out = tmp_path / "tuned"
    argv = local_args(local_data, out, "--pretrained", str(local_data["pth"]), "--features-from",
                      str(local_data["cache"]), "--max-jobs", "7", "--lr-min", "0.001", "--lr-max", "0.05",
                      "--batch-sizes", "16,32", "--timeout", "600", "--hp", "epochs=4", "--hp", "arch=resnet50")
    assert cli.main(argv, session_factory=no_aws) == 0
    out = out.resolve()
    assert docker.commands == [[
        "docker", "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}", "-e", "MPLCONFIGDIR=/tmp", "-e", "HOME=/tmp",
        "-v", f"{local_data['train']}:/opt/ml/input/data/train:ro",
        "-v", f"{local_data['valid']}:/opt/ml/input/data/valid:ro",
        "-v", f"{local_data['test']}:/opt/ml/input/data/test:ro",
        "-v", f"{local_data['pth']}:/opt/ml/input/data/pretrained/resnet50-0676ba61.pth:ro",
        "-v", f"{local_data['cache']}:/opt/ml/input/data/features:ro",
        "-v", f"{out}/model:/opt/ml/model",
        "-v", f"{out}/output:/opt/ml/output",
        "-v", f"{out}/checkpoints:/opt/ml/checkpoints",
        "dogbreed-train:latest", "python", "-m", "dogbreed.tune",
        "--trials", "7", "--lr-min", "0.001", "--lr-max", "0.05", "--batch-sizes", "16,32", "--timeout", "600",
        "--hp", "epochs=4", "--hp", "arch=resnet50",
    ]]
    for name in ("model", "output", "checkpoints"):
        assert (out / name).is_dir()  # made by this user, not by Docker as root
    assert capsys.readouterr().out.splitlines() == [f"tune report: {out}/output/data/tune", f"model: {out}/model"]


def test_tune_local_defaults_gpu_an_archive_and_no_final_model(docker, local_data, tmp_path, capsys):
    argv = local_args(local_data, tmp_path / "t2", "--pretrained", str(local_data["weights"]), "--features-from",
                      str(local_data["archive"]), "--instance-type", "local_gpu", "--no-final")
    assert cli.main(argv, session_factory=no_aws) == 0
    [command] = docker.commands
    assert command[:11] == ["docker", "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}", "-e",
                            "MPLCONFIGDIR=/tmp", "-e", "HOME=/tmp", "--gpus", "all"]
    assert f"{local_data['weights']}:/opt/ml/input/data/pretrained:ro" in command
    assert f"{local_data['archive']}:/opt/ml/input/data/features/output.tar.gz:ro" in command
    image = command.index("dogbreed-train:latest")
    assert command[image:] == ["dogbreed-train:latest", "python", "-m", "dogbreed.tune", "--trials", "10",
                               "--lr-min", "0.0001", "--lr-max", "0.1", "--batch-sizes", "16,32,64", "--no-final"]
    assert capsys.readouterr().out.splitlines() == [f"tune report: {(tmp_path / 't2').resolve()}/output/data/tune"]


@pytest.mark.parametrize("status", [1, 2])
def test_tune_local_exits_with_the_containers_status(docker, local_data, tmp_path, capsys, status):
    docker.code = status
    assert cli.main(local_args(local_data, tmp_path / "t3"), session_factory=no_aws) == status
    assert len(docker.commands) == 1
    assert capsys.readouterr().out == ""


LOCAL_BAD_INPUT = [
    ("missing train dir", {"train": "/nonexistent/train"}, [], "--train '/nonexistent/train': no such local directory"),
    ("missing pretrained", {}, ["--pretrained", "/nonexistent/w.pth"], "--pretrained '/nonexistent/w.pth': no such"),
    ("missing features", {}, ["--features-from", "/nonexistent/cache"],
     "--features-from '/nonexistent/cache': no such"),
    ("no image", {"image": ""}, [], "no training image"),
    ("tuned hp", {}, ["--hp", "batch_size=32"], "are tuned"),
    ("bad lr range", {}, ["--lr-min", "0.1", "--lr-max", "0.01"], "--lr-min < --lr-max"),
    ("no trials", {}, ["--max-jobs", "0"], "--max-jobs (the number of trials) must be at least 1"),
    ("cloud instance type", {}, ["--instance-type", "ml.m5.xlarge"], "local mode runs on 'local' or 'local_gpu'"),
    ("two instances", {}, ["--instance-count", "2"], "--instance-count must be 1"),
]


@pytest.mark.parametrize("case, override, extra, message", LOCAL_BAD_INPUT, ids=[c[0] for c in LOCAL_BAD_INPUT])
def test_tune_local_refuses_bad_input_without_running_docker(docker, local_data, tmp_path, capsys, case, override,
                                                             extra, message):
    argv = local_args(local_data, tmp_path / "t4", *extra)
    for flag, value in override.items():
        argv[argv.index(f"--{flag}") + 1] = value
    assert cli.main(argv, session_factory=no_aws) == 2, case
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert_names_real_flags("tune", err)
    assert docker.commands == []
    assert not (tmp_path / "t4").exists()


# --- bad input on the SageMaker side ---------------------------------------------------------------

BAD_INPUT = [
    ("features job with features off", ["features", *TRAIN_ARGS, "--hp", "features=off"], "needs features=on"),
    ("features job with a trained backbone", ["features", *TRAIN_ARGS, "--hp", "freeze=layer3"], "needs freeze=all"),
    ("features job told not to stop", ["features", *TRAIN_ARGS, "--hp", "features_only=false"], "features_only=true"),
    ("features-from with features off", ["tune", *TRAIN_ARGS, "--features-from", FEATURES_JOB, "--hp",
                                         "features=off"], "needs features=on"),
    ("features-from with features_only", ["train", *TRAIN_ARGS, "--features-from", FEATURES_JOB, "--hp",
                                          "features_only=true"], "use the features command"),
    ("features-from a bad name", ["tune", *TRAIN_ARGS, "--features-from", "feat_job!"], "--features-from"),
    ("features-from a bad URI", ["tune", *TRAIN_ARGS, "--features-from", "s3:/b/output.tar.gz"], "not an S3 URI"),
    ("features-from with a cloud GPU typo", ["tune", *TRAIN_ARGS, "--features-from", FEATURES_JOB,
                                             "--instance-type", "m5.xlarge"], "not a SageMaker instance type"),
    ("timeout without --local", ["tune", *TRAIN_ARGS, "--timeout", "60"], "for tune --local"),
    ("no-final without --local", ["tune", *TRAIN_ARGS, "--no-final"], "for tune --local"),
]


@pytest.mark.parametrize("case, argv, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_feature_input_fails_before_any_api_call(aws, capsys, case, argv, message):
    assert run(aws, *argv) == 2, case
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert_names_real_flags(argv[0], err)
    assert aws.calls == [], f"{case}: API calls were made: {aws.operations()}"
