"""Where a SageMaker training job finds its inputs and puts its outputs.

Every path and environment variable of the SageMaker training contract is read here
and nowhere else, so tests (and local runs) can point the whole job at a temporary
directory with ``DOGBREED_OPT_ML``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dogbreed.training.failure import ConfigError

CHANNELS = ("train", "valid", "test", "pretrained", "features")


@dataclass(frozen=True)
class TrainingEnvironment:
    """The paths of one training job; build it with :meth:`from_env`."""

    root: Path
    hyperparameters_path: Path
    resource_config_path: Path
    debughook_config_path: Path
    channels: dict[str, Path]
    model_dir: Path
    output_data_dir: Path
    failure_path: Path
    checkpoint_dir: Path
    tensorboard_dir: Path
    torch_home: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "TrainingEnvironment":
        """Read the paths from ``environ`` (default ``os.environ``).

        ``/opt/ml`` moves with ``DOGBREED_OPT_ML``; SageMaker's ``SM_CHANNEL_<NAME>``,
        ``SM_MODEL_DIR`` and ``SM_OUTPUT_DATA_DIR`` win where set, and
        ``DOGBREED_CHECKPOINT_DIR`` moves the checkpoints.
        """
        env = dict(os.environ if environ is None else environ)
        root = Path(env.get("DOGBREED_OPT_ML", "/opt/ml"))
        config = root / "input" / "config"
        channels = {
            name: Path(env.get(f"SM_CHANNEL_{name.upper()}", root / "input" / "data" / name))
            for name in CHANNELS
        }
        return cls(
            root=root,
            hyperparameters_path=config / "hyperparameters.json",
            resource_config_path=config / "resourceconfig.json",
            debughook_config_path=config / "debughookconfig.json",
            channels=channels,
            model_dir=Path(env.get("SM_MODEL_DIR", root / "model")),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", root / "output" / "data")),
            failure_path=root / "output" / "failure",
            checkpoint_dir=Path(env.get("DOGBREED_CHECKPOINT_DIR", root / "checkpoints")),
            # SageMaker's TensorBoardOutputConfig syncs this folder with S3 during the job.
            tensorboard_dir=root / "output" / "tensorboard",
            torch_home=Path(env["TORCH_HOME"]) if env.get("TORCH_HOME") else None,
            env=env,
        )

    def hyperparameters(self) -> dict[str, Any]:
        """The raw ``hyperparameters.json`` (SageMaker sends every value as a string); ``{}`` if absent."""
        return _read_json(self.hyperparameters_path, "hyperparameters")

    def resource_config(self) -> dict[str, Any]:
        """``resourceconfig.json``: ``current_host``, ``hosts``, ...; ``{}`` outside SageMaker."""
        return _read_json(self.resource_config_path, "resource config")

    @property
    def hosts(self) -> list[str]:
        return list(self.resource_config().get("hosts", []))

    @property
    def current_host(self) -> str | None:
        return self.resource_config().get("current_host")

    def has_debughook_config(self) -> bool:
        return self.debughook_config_path.is_file()


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the {what} file {path} must hold a JSON object, not {type(data).__name__}")
    return data
