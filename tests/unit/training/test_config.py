import json
import os
import subprocess
import sys

import pytest

from dogbreed.training.config import TrainConfig, build_parser, load_config, parse_values
from dogbreed.training.environment import TrainingEnvironment
from dogbreed.training.failure import ConfigError


def env_with(tmp_path, monkeypatch, hyperparameters=None, **environ):
    monkeypatch.setenv("DOGBREED_OPT_ML", str(tmp_path))
    for name in ("SM_CHANNEL_TRAIN", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "DOGBREED_CHECKPOINT_DIR"):
        monkeypatch.delenv(name, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    if hyperparameters is not None:
        (tmp_path / "input" / "config").mkdir(parents=True, exist_ok=True)
        (tmp_path / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return TrainingEnvironment.from_env()


def test_defaults():
    config = TrainConfig()
    assert (config.lr, config.batch_size, config.epochs, config.patience) == (0.001, 32, 10, 3)
    assert (config.arch, config.pretrained, config.freeze, config.seed) == ("resnet50", "imagenet", "all", 0)
    assert 1 <= config.num_workers <= 4
    assert config.max_unreadable_fraction == 0.05


def test_plain_and_json_encoded_strings():
    plain = TrainConfig.from_mapping({"lr": "0.01", "batch_size": "64", "amp": "true", "arch": "resnet18"})
    encoded = TrainConfig.from_mapping({"lr": '"0.01"', "batch_size": '"64"', "amp": '"true"', "arch": '"resnet18"'})
    assert plain == encoded
    assert (plain.lr, plain.batch_size, plain.amp, plain.arch) == (0.01, 64, True, "resnet18")
    typed = TrainConfig.from_mapping({"lr": 0.01, "batch_size": 64, "amp": True, "arch": "resnet18"})
    assert typed == plain


def test_sagemaker_keys_are_ignored():
    config = TrainConfig.from_mapping(
        {"sagemaker_program": '"x"', "_tuning_objective_metric": "valid_loss", "sagemaker_region": "eu-west-1", "epochs": "2"}
    )
    assert config.epochs == 2


def test_unknown_key_names_it_and_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_mapping({"learning_rate": "0.1"})
    assert "'learning_rate'" in str(info.value) and "batch_size" in str(info.value) and "lr" in str(info.value)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("lr", "0", "lr"),
        ("lr", "-1", "lr"),
        ("batch_size", "0", "batch_size"),
        ("batch_size", "1.5", "batch_size"),
        ("batch_size", "many", "batch_size"),
        ("arch", "vgg16", "resnet50"),
        ("freeze", "layer9", "layer4"),
        ("amp", "maybe", "amp"),
        ("max_unreadable_fraction", "2", "max_unreadable_fraction"),
        ("resize_size", "100", "image_size"),
        ("pretrained", "/no/such/file.pth", "pretrained"),
        ("loader_timeout", "0", "seconds"),
        ("class_weights", "auto", "none, balanced"),
        ("on_leakage", "ignore", "warn, fail"),
    ],
)
def test_bad_values_are_clear_errors(key, value, words):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_mapping({key: value})
    assert key in str(info.value) and words in str(info.value)


def test_precedence_flag_over_json_over_default(tmp_path, monkeypatch):
    env = env_with(tmp_path, monkeypatch, {"lr": '"0.05"', "batch_size": "16", "epochs": "4"})
    config, paths = load_config(["--batch-size", "8", "--epochs=5"], env)
    assert (config.lr, config.batch_size, config.epochs, config.patience) == (0.05, 8, 5, 3)
    config, _ = load_config(["--batch_size", "9"], env)
    assert config.batch_size == 9


def test_bad_flag_is_a_config_error(tmp_path, monkeypatch):
    env = env_with(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match="--nope"):
        load_config(["--nope", "1"], env)
    with pytest.raises(ConfigError, match="lr"):
        load_config(["--lr", "abc"], env)


def test_help_lists_every_hyperparameter_and_path_flag(tmp_path, monkeypatch):
    text = build_parser(env_with(tmp_path, monkeypatch)).format_help()
    for name in TrainConfig.names():
        assert f"--{name} " in text or f"--{name}," in text, name
    for flag in ("--train", "--valid", "--test", "--model-dir", "--output-data-dir", "--checkpoint-dir", "--batch-size"):
        assert flag in text


def test_environment_paths_and_overrides(tmp_path, monkeypatch):
    env = env_with(tmp_path, monkeypatch)
    assert env.channels["train"] == tmp_path / "input" / "data" / "train"
    assert env.model_dir == tmp_path / "model"
    assert env.output_data_dir == tmp_path / "output" / "data"
    assert env.failure_path == tmp_path / "output" / "failure"
    assert env.checkpoint_dir == tmp_path / "checkpoints"
    assert env.hyperparameters() == {} and env.hosts == []
    env = env_with(
        tmp_path, monkeypatch, SM_CHANNEL_TRAIN="/data/t", SM_MODEL_DIR="/m", SM_OUTPUT_DATA_DIR="/o",
        DOGBREED_CHECKPOINT_DIR="/c",
    )
    assert (env.channels["train"], env.model_dir, env.output_data_dir, env.checkpoint_dir) == (
        tmp_path.__class__("/data/t"), tmp_path.__class__("/m"), tmp_path.__class__("/o"), tmp_path.__class__("/c"),
    )
    _, paths = load_config([], env)
    assert str(paths.train) == "/data/t"
    _, paths = load_config(["--train", "/x"], env)
    assert str(paths.train) == "/x"


def test_the_toolkit_environment_is_read_as_the_toolkit_parsed_it(tmp_path):
    """In the image, sagemaker-training's Environment is the source: hosts, channels, decoded hyperparameters."""
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(
        {"lr": "0.01", "batch_size": "\"16\"", "augment": "false", "sagemaker_program": "\"x.py\""}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"], "network_interface_name": "eth0"}))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {}, "valid": {}, "model": {}}))
    script = (
        "import json, sys; from sagemaker_training.environment import Environment; "
        "from dogbreed.training.environment import TrainingEnvironment; "
        "from dogbreed.training.config import load_config; "
        "env = TrainingEnvironment.from_toolkit(Environment()); config, paths = load_config([], env); "
        "print(json.dumps({'hosts': env.hosts, 'current': env.current_host, 'train': str(paths.train), "
        "'model': str(env.model_dir), 'failure': str(env.failure_path), 'lr': config.lr, "
        "'previous_model': str(paths.previous_model), "
        "'batch_size': config.batch_size, 'augment': config.augment, 'hp': env.hyperparameters()}))"
    )
    environ = {**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environ, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["hosts"] == ["algo-1", "algo-2"] and seen["current"] == "algo-2"
    assert seen["train"] == str(tmp_path / "input" / "data" / "train")
    assert seen["previous_model"] == str(tmp_path / "input" / "data" / "model")  # the model channel
    assert seen["model"] == str(tmp_path / "model") and seen["failure"] == str(tmp_path / "output" / "failure")
    assert (seen["lr"], seen["batch_size"], seen["augment"]) == (0.01, 16, False)
    assert "sagemaker_program" not in seen["hp"]  # the toolkit keeps its own keys apart


def test_broken_hyperparameters_json(tmp_path, monkeypatch):
    monkeypatch.setenv("DOGBREED_OPT_ML", str(tmp_path))
    (tmp_path / "input" / "config").mkdir(parents=True)
    (tmp_path / "input" / "config" / "hyperparameters.json").write_text("{not json")
    with pytest.raises(ConfigError, match="hyperparameters"):
        load_config([], TrainingEnvironment.from_env())


def test_parse_values_dash_keys():
    assert parse_values({"batch-size": "3"}, "x") == {"batch_size": 3}
