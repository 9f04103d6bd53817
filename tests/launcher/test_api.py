"""dogbreed.launcher's Python API against moto: what a notebook or script calls, and what the CLI runs.

The same requests as the commands, typed frozen results, and errors whose text is the line the
CLI prints after ``error:``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from dogbreed.launcher import cli
from tests.launcher.aws import RecordingSession
from tests.launcher.cli_args import DATA, IMAGE, OUT, ROLE, TRAIN_ARGS
from tests.launcher.conftest import REGION, REPO

CHANNELS = {"train": f"{DATA}/train", "valid": f"{DATA}/valid", "test": f"{DATA}/test"}


@pytest.fixture
def aws(aws_env) -> RecordingSession:
    return RecordingSession(REGION)


def test_the_api_is_the_packages_and_importing_the_package_loads_no_sdk():
    code = ("import sys, dogbreed.launcher as l, dogbreed.launcher.validation; "
            "print('sagemaker' in sys.modules, 'boto3' in sys.modules); "
            "from dogbreed.launcher import train, predict, LauncherError; print(train.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.split() == ["False", "False", "dogbreed.launcher.api"], proc.stderr


def test_train_sends_the_clis_request_and_returns_the_job(aws):
    from dogbreed.launcher import TrainingJob, TrainingSpec, train

    spec = TrainingSpec(image=IMAGE, channels=CHANNELS, output=OUT, role=ROLE,
                        hyperparameters={"epochs": "10"}, job_name="dogbreed-api-1")
    job = train(spec, session=aws.session)
    assert isinstance(job, TrainingJob) and dataclasses.is_dataclass(job)
    assert (job.name, job.local) == ("dogbreed-api-1", False)
    assert job.model == f"{OUT}/dogbreed-api-1/output/model.tar.gz"
    assert job.output_data == f"{OUT}/dogbreed-api-1/output/output.tar.gz"
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "other"  # type: ignore[misc] - the point: results are frozen
    from_api = aws.params("CreateTrainingJob")

    cli_aws = RecordingSession(REGION)
    assert cli.main(["train", *TRAIN_ARGS, "--hp", "epochs=10", "--job-name", "dogbreed-api-2"],
                    session_factory=cli_aws.factory) == 0
    from_cli = json.dumps(cli_aws.params("CreateTrainingJob"), sort_keys=True, default=str)
    assert json.dumps(from_api, sort_keys=True, default=str) == from_cli.replace("dogbreed-api-2", "dogbreed-api-1")
    assert from_api["EnableManagedSpotTraining"] is True and "DebugRuleConfigurations" in from_api


def test_predict_returns_labels_and_probabilities(aws, tmp_path):
    from dogbreed.launcher import Prediction, predict

    photo = tmp_path / "dog.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    answer = {"predicted_class": 1, "predicted_label": "Siberian husky",
              "top_k": [{"class": 1, "label": "Siberian husky", "probability": 0.91},
                        {"class": 0, "label": "Beagle", "probability": 0.09}]}
    aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": json.dumps(answer).encode(),
                                                           "ContentType": "application/json"}
    prediction = predict("dogbreed-ep", photo, session=aws.session)
    assert isinstance(prediction, Prediction)
    assert prediction.label == "Siberian husky"
    assert prediction.top_k == (("Siberian husky", 0.91), ("Beagle", 0.09))
    assert prediction.answer == answer and prediction.explanation is None and prediction.overlay is None
    assert str(prediction) == "Siberian husky  0.910\nBeagle          0.090"
    assert aws.operations() == ["InvokeEndpoint"]


@pytest.mark.parametrize("case", ["bad input", "endpoint error", "AWS error"])
def test_an_errors_text_is_what_the_cli_prints(aws, tmp_path, capsys, case):
    from dogbreed.launcher import AwsError, EndpointError, LauncherError, delete, predict

    photo = tmp_path / "dog.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    if case == "bad input":
        argv, call, kind, status = ["predict", "dogbreed-ep", str(tmp_path / "gone.jpg")], \
            lambda: predict("dogbreed-ep", tmp_path / "gone.jpg", session=aws.session), LauncherError, 2
    elif case == "endpoint error":
        aws.canned[("runtime.sagemaker", "InvokeEndpoint")] = {
            "Error": {"Code": "ModelError", "Message": "Received client error (415)"},
            "OriginalStatusCode": 415, "OriginalMessage": '{"error": "not an image"}'}
        argv, call, kind, status = ["predict", "dogbreed-ep", str(photo)], \
            lambda: predict("dogbreed-ep", photo, session=aws.session), EndpointError, 1
    else:  # moto has no such endpoint
        argv, call, kind, status = ["delete", "dogbreed-nowhere"], \
            lambda: delete("dogbreed-nowhere", session=aws.session), AwsError, 1
    with pytest.raises(kind) as raised:
        call()
    assert isinstance(raised.value, LauncherError)
    assert cli.main(argv, session_factory=aws.factory) == status
    assert capsys.readouterr().err == f"error: {raised.value}\n"
