"""docs/sagemaker.md's "With the SageMaker Python SDK alone", executed against moto.

Its Python blocks run in order with every boto3 session recording its requests; each request
must equal the one the launcher's API sends for the same job (names aside), so the page cannot
drift from the launcher: metric regexes, Debugger rules, profiler, checkpoints, TensorBoard, spot.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.launcher.conftest import REPO, require_launcher_venv

require_launcher_venv()

import boto3

from dogbreed.launcher import DeploySpec, TrainingSpec, TuningSpec, api
from tests.launcher.aws import RecordingSession
from tests.launcher.cli_args import DATA, IMAGE, OUT, ROLE, SERVE
from tests.launcher.conftest import REGION

SECTION = "## With the SageMaker Python SDK alone"
ANSWER = {"predicted_class": 1, "predicted_label": "Siberian husky",
          "top_k": [{"class": 1, "label": "Siberian husky", "probability": 0.912}]}


def doc_blocks() -> list[str]:
    text = (REPO / "docs" / "sagemaker.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def same(doc: dict, launcher: dict, names: dict[str, str]) -> None:
    """The two requests are equal once the launcher's names are the doc's."""
    text = json.dumps(launcher, sort_keys=True, default=str)
    for launcher_name, doc_name in names.items():
        text = text.replace(launcher_name, doc_name)
    assert json.dumps(doc, sort_keys=True, default=str) == text


@pytest.fixture
def doc(aws_env, monkeypatch, tmp_path, capsys) -> RecordingSession:
    """The doc's blocks run: its requests, recorded."""
    recording = RecordingSession(REGION)
    recording.canned[("runtime.sagemaker", "InvokeEndpoint")] = {"Body": json.dumps(ANSWER).encode(),
                                                                "ContentType": "application/json"}
    session_class = boto3.Session
    monkeypatch.setattr(boto3, "Session", lambda **_: recording.session)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dog.jpg").write_bytes(b"\xff\xd8\xff\xe0 a photo")
    blocks = doc_blocks()
    assert len(blocks) == 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/sagemaker.md", "exec"), namespace)  # noqa: S102 - the point: run the doc's code
    assert capsys.readouterr().out == "Siberian husky  0.912\n"
    monkeypatch.setattr(boto3, "Session", session_class)  # the launcher's sessions below are its own
    return recording


def test_the_docs_requests_are_the_launchers(doc, aws_env, tmp_path):
    """One run of the doc (moto keeps its names for the session): train, tune, deploy, predict, delete."""
    launcher = RecordingSession(REGION)
    launcher.canned = dict(doc.canned)
    spec = TrainingSpec(image=IMAGE, channels={s: f"{DATA}/{s}" for s in ("train", "valid", "test")}, output=OUT,
                        role=ROLE, hyperparameters={"epochs": "10"}, job_name="dogbreed-sdk-2")
    api.train(spec, session=launcher.session)
    same(doc.params("CreateTrainingJob"), launcher.params("CreateTrainingJob"), {"dogbreed-sdk-2": "dogbreed-sdk-1"})

    api.tune(TuningSpec(training=spec, name="dogbreed-hpo-sdk-2"), session=launcher.session)
    same(doc.params("CreateHyperParameterTuningJob"), launcher.params("CreateHyperParameterTuningJob"),
         {"dogbreed-hpo-sdk-2": "dogbreed-hpo-sdk-1"})

    model = f"{OUT}/dogbreed-sdk-1/output/model.tar.gz"
    api.deploy(DeploySpec(image=SERVE, model_data=model, role=ROLE, name="dogbreed-sdk-2"), session=launcher.session)
    prediction = api.predict("dogbreed-sdk-2", tmp_path / "dog.jpg", session=launcher.session)
    assert prediction.label == "Siberian husky"
    api.delete("dogbreed-sdk-2", session=launcher.session)
    for operation in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint", "InvokeEndpoint", "DeleteEndpoint",
                      "DeleteEndpointConfig", "DeleteModel"):
        same(doc.params(operation), launcher.params(operation), {"dogbreed-sdk-2": "dogbreed-sdk"})
