"""Where a training job finds its inputs and puts its outputs, and which hosts it runs on.

In the image, sagemaker-training parses the SageMaker training contract
(``hyperparameters.json``, ``inputdataconfig.json``'s channels, ``resourceconfig.json``'s
hosts, the GPUs, the paths) and :meth:`TrainingEnvironment.from_toolkit` takes its
``Environment`` as it is. ``python -m dogbreed.training`` run by hand or by the tests,
outside the toolkit, reads a local ``/opt/ml``-shaped tree (``DOGBREED_OPT_ML``) with
:meth:`TrainingEnvironment.from_env`: one host, its hyperparameters file and channels.

:func:`check_config_files` checks the contract's config files before the toolkit reads them,
so that a tree made by hand fails with one line naming the file, not the toolkit's traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogbreed.input_channels import ALL_CHANNELS
from dogbreed.training.failure import ConfigError

HYPERPARAMETERS_FILE = "hyperparameters.json"
INPUT_DATA_CONFIG_FILE = "inputdataconfig.json"
RESOURCE_CONFIG_FILE = "resourceconfig.json"
LONE_HOST = "algo-1"  # the name SageMaker gives the only host of a job


@dataclass(frozen=True)
class TrainingEnvironment:
    """The paths and hosts of one training job."""

    root: Path
    hyperparameters_source: str  # hyperparameters.json's path, for error messages
    debughook_config_path: Path
    channels: dict[str, Path]
    model_dir: Path
    output_data_dir: Path
    failure_path: Path
    checkpoint_dir: Path
    tensorboard_dir: Path
    hosts: list[str] = field(default_factory=list)  # every host of the job, the first is the master
    current_host: str | None = None
    num_gpus: int = 0
    torch_home: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    parsed_hyperparameters: dict[str, Any] | None = None  # the toolkit's (JSON-decoded, its own keys apart)

    def hyperparameters(self) -> dict[str, Any]:
        """As SageMaker sent them: the toolkit's parse, or the local tree's file (``{}`` if absent)."""
        if self.parsed_hyperparameters is not None:
            return dict(self.parsed_hyperparameters)
        path = Path(self.hyperparameters_source)
        return read_config_file(path) if path.exists() else {}

    @classmethod
    def from_toolkit(cls, toolkit_env: Any, environ: Mapping[str, str] | None = None) -> TrainingEnvironment:
        """From sagemaker-training's ``Environment``: what it parsed, and the contract's other folders."""
        env = dict(os.environ if environ is None else environ)
        root = Path(toolkit_env.input_dir).parent
        channels = {name: root / "input" / "data" / name for name in ALL_CHANNELS}
        channels.update({name: Path(path) for name, path in toolkit_env.channel_input_dirs.items()})
        return cls(
            root=root,
            parsed_hyperparameters=dict(toolkit_env.hyperparameters),
            hyperparameters_source=str(Path(toolkit_env.input_config_dir) / HYPERPARAMETERS_FILE),
            debughook_config_path=Path(toolkit_env.input_config_dir) / "debughookconfig.json",
            channels=channels,
            model_dir=Path(toolkit_env.model_dir),
            output_data_dir=Path(toolkit_env.output_data_dir),
            failure_path=Path(toolkit_env.output_dir) / "failure",
            checkpoint_dir=Path(env.get("DOGBREED_CHECKPOINT_DIR", root / "checkpoints")),
            # SageMaker's TensorBoardOutputConfig syncs this folder with S3 during the job.
            tensorboard_dir=Path(toolkit_env.output_dir) / "tensorboard",
            hosts=list(toolkit_env.hosts),
            current_host=toolkit_env.current_host,
            num_gpus=int(toolkit_env.num_gpus),
            torch_home=Path(env["TORCH_HOME"]) if env.get("TORCH_HOME") else None,
            env=env,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingEnvironment:
        """A local tree for a run outside the toolkit (``environ`` default ``os.environ``).

        ``/opt/ml`` moves with ``DOGBREED_OPT_ML``; ``SM_CHANNEL_<NAME>``, ``SM_MODEL_DIR``
        and ``SM_OUTPUT_DATA_DIR`` win where set, and ``DOGBREED_CHECKPOINT_DIR`` moves the
        checkpoints. One host.
        """
        env = dict(os.environ if environ is None else environ)
        root = Path(env.get("DOGBREED_OPT_ML", "/opt/ml"))
        config = root / "input" / "config"
        channels = {
            name: Path(env.get(f"SM_CHANNEL_{name.upper()}", root / "input" / "data" / name)) for name in ALL_CHANNELS
        }
        hyperparameters_path = config / HYPERPARAMETERS_FILE
        return cls(
            root=root,
            hyperparameters_source=str(hyperparameters_path),
            debughook_config_path=config / "debughookconfig.json",
            channels=channels,
            model_dir=Path(env.get("SM_MODEL_DIR", root / "model")),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", root / "output" / "data")),
            failure_path=root / "output" / "failure",
            checkpoint_dir=Path(env.get("DOGBREED_CHECKPOINT_DIR", root / "checkpoints")),
            tensorboard_dir=root / "output" / "tensorboard",
            torch_home=Path(env["TORCH_HOME"]) if env.get("TORCH_HOME") else None,
            env=env,
        )

    def has_debughook_config(self) -> bool:
        return self.debughook_config_path.is_file()


def check_config_files(config_dir: Path) -> None:
    """Check the contract's config files in ``config_dir`` as sagemaker-training will read them.

    ``hyperparameters.json`` and ``inputdataconfig.json`` must each hold a JSON object (``{}``
    for none). ``resourceconfig.json`` may be missing, which means one host
    (:func:`one_host_resource_config`); where it is there it must name the hosts and the current
    one among them. Raises :class:`ConfigError` naming the file and what is wrong with it.
    """
    read_config_file(config_dir / HYPERPARAMETERS_FILE)
    read_config_file(config_dir / INPUT_DATA_CONFIG_FILE)
    resource_config_path = config_dir / RESOURCE_CONFIG_FILE
    if resource_config_path.exists():
        _check_hosts(read_config_file(resource_config_path), resource_config_path)


def one_host_resource_config() -> dict[str, Any]:
    """What a missing ``resourceconfig.json`` stands for: a job on one host, named as SageMaker names it."""
    return {"current_host": LONE_HOST, "hosts": [LONE_HOST]}


def read_config_file(path: Path) -> dict[str, Any]:
    """The JSON object in config file ``path``; :class:`ConfigError` if it is missing, unreadable,
    not JSON or not an object."""
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} is missing") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, not {type(data).__name__}")
    return data


def _check_hosts(resource_config: dict[str, Any], path: Path) -> None:
    """``hosts`` a non-empty list of names, ``current_host`` one of them: all the toolkit needs of the file."""
    hosts = resource_config.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(host, str) and host for host in hosts):
        raise ConfigError(f"config file {path}: hosts must be a non-empty list of host names, not {json.dumps(hosts)}")
    current_host = resource_config.get("current_host")
    if current_host not in hosts:
        raise ConfigError(
            f"config file {path}: current_host must be one of hosts {json.dumps(hosts)}, not {json.dumps(current_host)}"
        )
