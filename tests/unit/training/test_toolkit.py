"""The image's toolkit entry point: what it leaves of sagemaker-training's log."""

from __future__ import annotations

import json
import logging

from sagemaker_training import environment, logging_config

from dogbreed.training import toolkit


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
