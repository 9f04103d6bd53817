"""The image's toolkit entry point: what it leaves of sagemaker-training's log, and how the image's
``train`` meets a hand-made ``/opt/ml`` tree."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sagemaker_training import environment, logging_config

import dogbreed
from dogbreed.training import toolkit
from tests.conftest import REPO

TRAIN = REPO / "docker" / "train" / "train"  # the image's `train`


def read_hyperparameters(tmp_path, monkeypatch, caplog) -> list[str]:
    """The toolkit reads a plain-string and a JSON hyperparameter; what its logger logged, at INFO."""
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"arch": "resnet18", "epochs": "2"}))
    monkeypatch.setattr(environment, "hyperparameters_file_dir", str(path))
    with caplog.at_level(logging.INFO, logger=toolkit.TOOLKIT_LOGGER):
        assert environment.read_hyperparameters() == {"arch": "resnet18", "epochs": 2}
        logging_config.get_logger().info("Reporting training SUCCESS")
    return [r.getMessage() for r in caplog.records if r.name == toolkit.TOOLKIT_LOGGER]


def test_the_toolkits_not_json_note_is_dropped_and_its_other_lines_kept(tmp_path, monkeypatch, caplog):
    assert logging_config.get_logger().name == toolkit.TOOLKIT_LOGGER
    assert read_hyperparameters(tmp_path, monkeypatch, caplog) == ["Reporting training SUCCESS"]


def test_without_the_filter_the_toolkit_logs_the_note(tmp_path, monkeypatch, caplog):
    """The filter matches the toolkit's message as this version logs it (else the test above proves nothing)."""
    toolkit_logger = logging.getLogger(toolkit.TOOLKIT_LOGGER)
    monkeypatch.setattr(toolkit_logger, "filters", [])
    logged = read_hyperparameters(tmp_path, monkeypatch, caplog)
    assert logged[0].startswith("Failed to parse hyperparameter arch value resnet18 to Json."), logged
    assert not toolkit.drop_not_json_note(caplog.records[0])
    assert len(logged) == 2


VALID_CONFIG = {
    "hyperparameters.json": json.dumps({"epochs": "1"}),
    "inputdataconfig.json": json.dumps({"train": {"TrainingInputMode": "File"}}),
    "resourceconfig.json": json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}),
}


def hand_made_tree(tmp_path: Path, **changes: str | None) -> Path:
    """An ``/opt/ml`` tree with SageMaker's three config files, each replaced (text) or left out (None)."""
    config = tmp_path / "opt_ml" / "input" / "config"
    config.mkdir(parents=True)
    for name, text in VALID_CONFIG.items():
        text = changes.get(name.replace(".json", ""), text)
        if text is not None:
            (config / name).write_text(text)
    return tmp_path / "opt_ml"


def test_the_images_train_is_this_one_ahead_of_the_toolkits():
    """SageMaker runs `train` by name: ours must come before sagemaker-training's on the image's PATH
    (the PATH its ENV lines leave, each expanding the one before)."""
    dockerfile = (REPO / "docker" / "train" / "Dockerfile").read_text()
    assert "COPY docker/train/train /opt/dogbreed/bin/train\n" in dockerfile
    path = "BASE"
    for assignment in re.findall(r"\bPATH=(\S+)", dockerfile):
        path = assignment.replace("$PATH", path)
    folders = path.split(":")
    assert folders.index("/opt/dogbreed/bin") < folders.index("/opt/venv/bin"), path
    assert os.access(TRAIN, os.X_OK)


def run_train(opt_ml: Path) -> subprocess.CompletedProcess:
    """The image's ``train`` over ``opt_ml``, as the image sets it up."""
    environ = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(opt_ml),
        "SAGEMAKER_TRAINING_MODULE": "dogbreed.training.toolkit:main",
        "PYTHONPATH": str(Path(dogbreed.__file__).parents[1]),  # this checkout's code, as /opt/dogbreed is
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `python`: this venv's
    }
    return subprocess.run(["sh", str(TRAIN)], capture_output=True, text=True, env=environ, timeout=120)


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"hyperparameters": None}, "hyperparameters.json is missing"),
        ({"hyperparameters": "{not json"}, "hyperparameters.json is not valid JSON: Expecting property name"),
        ({"hyperparameters": "[1]"}, "hyperparameters.json must hold a JSON object, not list"),
        ({"inputdataconfig": None}, "inputdataconfig.json is missing"),
        ({"inputdataconfig": ""}, "inputdataconfig.json is not valid JSON: Expecting value"),
        ({"resourceconfig": "{"}, "resourceconfig.json is not valid JSON"),
        ({"resourceconfig": '{"current_host": "algo-1", "hosts": []}'},
         "resourceconfig.json: hosts must be a non-empty list of host names, not []"),
        ({"resourceconfig": '{"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}'},
         'resourceconfig.json: current_host must be one of hosts ["algo-1", "algo-2"], not "algo-3"'),
    ],
)
def test_a_missing_or_malformed_config_file_fails_with_one_line_naming_it(tmp_path, changes, reason):
    opt_ml = hand_made_tree(tmp_path, **changes)
    run = run_train(opt_ml)
    assert run.returncode == 2, run.stdout + run.stderr
    failure = (opt_ml / "output" / "failure").read_text()
    assert failure.count("\n") == 1 and failure.endswith("\n"), failure
    assert failure.startswith(f"config file {opt_ml / 'input' / 'config'}/") and reason in failure, failure
    assert "Traceback" not in run.stdout + run.stderr + failure
    assert f"training failed: {failure.strip()}" in run.stderr
    assert not (opt_ml / "output" / "success").exists()


USER_SCRIPT = """import json, os
seen = {"hosts": json.loads(os.environ["SM_HOSTS"]), "current_host": os.environ["SM_CURRENT_HOST"]}
with open(os.path.join(os.environ["SM_MODEL_DIR"], "seen.json"), "w") as f:
    json.dump(seen, f)
"""


def test_without_resourceconfig_the_job_runs_on_one_host(tmp_path):
    """Script mode (no torch to import): the toolkit's every Environment, and the user's script, see algo-1 alone."""
    opt_ml = hand_made_tree(tmp_path, resourceconfig=None)
    for folder in ("code", "model", "output"):  # the toolkit writes its success file only into an existing output/
        (opt_ml / folder).mkdir()
    (opt_ml / "code" / "user_train.py").write_text(USER_SCRIPT)
    hyperparameters = {"sagemaker_program": "user_train.py", "sagemaker_submit_directory": str(opt_ml / "code")}
    (opt_ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    run = run_train(opt_ml)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    seen = json.loads((opt_ml / "model" / "seen.json").read_text())
    assert seen == {"hosts": ["algo-1"], "current_host": "algo-1"}
    decision = f"one host, algo-1: {opt_ml}/input/config/resourceconfig.json is missing"
    assert log.count(decision) == 1, log
    assert (opt_ml / "output" / "success").exists() and not (opt_ml / "output" / "failure").exists()


def test_the_toolkits_environment_reads_a_missing_resourceconfig_as_one_host(tmp_path, monkeypatch):
    """As each of torchrun's processes builds it, having imported the toolkit module; the file wins where it is."""
    path = tmp_path / "resourceconfig.json"
    monkeypatch.setattr(environment, "resource_config_file_dir", str(path))
    given = {"hyperparameters": {"epochs": 1}, "input_data_config": {"train": {}}}
    env = environment.Environment(**given)
    assert (env.hosts, env.current_host) == (["algo-1"], "algo-1")
    path.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    env = environment.Environment(**given)
    assert (env.hosts, env.current_host) == (["algo-1", "algo-2"], "algo-2")
