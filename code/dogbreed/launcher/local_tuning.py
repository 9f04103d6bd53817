"""``tune --local``: the lr/batch_size search on this machine, ``python -m dogbreed.tune`` in Docker.

No tuning job and no AWS: one container of the local training image computes the frozen
backbone's features once (or reads a cache from ``--features-from``), runs an Optuna
search over ``lr`` and ``batch_size`` on them, and trains the final model with the best
pair. The container sees the SageMaker layout:

=========================================  ==============================================
``/opt/ml/input/data/{train,valid,test}``  the split directories, read-only
``/opt/ml/input/data/pretrained``          ``--pretrained`` (a directory or one file), read-only
``/opt/ml/input/data/features``            ``--features-from`` (a directory or one file), read-only
``/opt/ml/model``                          ``<output>/model``: the final model
``/opt/ml/output``                         ``<output>/output``: ``data/tune/`` holds the report
``/opt/ml/checkpoints``                    ``<output>/checkpoints``
=========================================  ==============================================
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dogbreed.input_channels import FEATURES_CHANNEL, MODEL_CHANNEL, PRETRAINED_CHANNEL, SPLIT_CHANNELS
from dogbreed.job_outputs import SEARCH_DIR
from dogbreed.launcher import docker_run, training_jobs, tuning, validation
from dogbreed.launcher.validation import LauncherError

DATA = "/opt/ml/input/data"
# <output>/<name> on this machine -> the container's folder.
WRITABLE = {"model": "/opt/ml/model", "output": "/opt/ml/output", "checkpoints": "/opt/ml/checkpoints"}
MODULE = "dogbreed.tune"


@dataclass
class LocalTuningSpec:
    """One local search; paths are checked (and ``output`` made absolute) on construction."""

    image: str
    channels: dict[str, str]
    output: str
    lr_min: float = 1e-4
    lr_max: float = 1e-1
    batch_sizes: list[int] = field(default_factory=lambda: [16, 32, 64])
    trials: int = 20
    hyperparameters: dict[str, str] = field(default_factory=dict)
    pretrained: str | None = None
    features_from: str | None = None
    model_from: str | None = None  # an earlier model to start from: a directory or its model.tar.gz
    timeout_seconds: int | None = None
    final: bool = True
    instance_type: str = "local"

    def __post_init__(self) -> None:
        if not self.image:
            raise LauncherError("no training image: pass --image with a local tag such as dogbreed-train:latest")
        missing = [c for c in SPLIT_CHANNELS if not self.channels.get(c)]
        if missing:
            raise LauncherError(f"missing data channel(s): {', '.join(missing)} (--train, --valid, --test)")
        self.channels = {
            name: _mountable(training_jobs.local_channel(path, f"--{name}"), f"--{name}")
            for name, path in self.channels.items()
        }
        if self.pretrained:
            self.pretrained = _local_dir_or_file(self.pretrained, "--pretrained")
        if self.features_from:
            self.features_from = _local_dir_or_file(self.features_from, "--features-from")
        if self.model_from:
            self.model_from = _local_dir_or_file(self.model_from, "--from")
        tuning.check_search(self.lr_min, self.lr_max, self.batch_sizes, self.hyperparameters)
        validation.count(self.trials, "--max-jobs (the number of trials)")
        if self.timeout_seconds is not None:
            validation.count(self.timeout_seconds, "--timeout")
        self.instance_type = validation.instance_type(self.instance_type, local=True)
        self.output = _mountable(str(Path(self.output).expanduser().resolve()), "--output")
        if Path(self.output).exists() and not Path(self.output).is_dir():
            raise LauncherError(f"--output {self.output!r} is a file, not a directory")

    @property
    def model_dir(self) -> Path:
        return Path(self.output) / "model"

    @property
    def report_dir(self) -> Path:
        return Path(self.output) / "output" / "data" / SEARCH_DIR


def _mountable(path: str, what: str) -> str:
    """``docker run -v HOST:CONTAINER`` splits on ':', so a host path must not hold one."""
    if ":" in path:
        raise LauncherError(f"{what} {path!r}: Docker cannot mount a path with ':' in it")
    return path


def _local_dir_or_file(value: str, what: str) -> str:
    """An existing local directory or file, as an absolute path."""
    path = Path(value[len("file://") :] if value.startswith("file://") else value).expanduser()
    if not path.exists():
        raise LauncherError(f"{what} {value!r}: no such local directory or file")
    return _mountable(str(path.resolve()), what)


def _read_only(host: str, channel: str) -> list[str]:
    """Mount a directory as the channel, or a single file inside the channel's directory."""
    target = f"{DATA}/{channel}"
    if Path(host).is_file():
        target = f"{target}/{Path(host).name}"
    return ["-v", f"{host}:{target}:ro"]


def tune_arguments(spec: LocalTuningSpec) -> list[str]:
    """The arguments of ``python -m dogbreed.tune`` (paths: its /opt/ml defaults)."""
    args = [
        "--trials",
        str(spec.trials),
        "--lr-min",
        repr(spec.lr_min),
        "--lr-max",
        repr(spec.lr_max),
        "--batch-sizes",
        ",".join(str(b) for b in spec.batch_sizes),
    ]
    if spec.timeout_seconds is not None:
        args += ["--timeout", str(spec.timeout_seconds)]
    for name, value in spec.hyperparameters.items():
        args += ["--hp", f"{name}={value}"]
    if not spec.final:
        args.append("--no-final")
    return args


def docker_command(spec: LocalTuningSpec) -> list[str]:
    """``docker run`` of the search, as this user (the files it writes are the user's)."""
    command = docker_run.as_this_user()
    if spec.instance_type == "local_gpu":
        command += ["--gpus", "all"]
    for name, host in spec.channels.items():
        command += _read_only(host, name)
    if spec.pretrained:
        command += _read_only(spec.pretrained, PRETRAINED_CHANNEL)
    if spec.features_from:
        command += _read_only(spec.features_from, FEATURES_CHANNEL)
    if spec.model_from:
        command += _read_only(spec.model_from, MODEL_CHANNEL)
    for name, target in WRITABLE.items():
        command += ["-v", f"{spec.output}/{name}:{target}"]
    return [*command, spec.image, "python", "-m", MODULE, *tune_arguments(spec)]


def run(spec: LocalTuningSpec) -> int:
    """Run the search with the container's output on this terminal; the container's exit status."""
    for name in WRITABLE:
        (Path(spec.output) / name).mkdir(parents=True, exist_ok=True)  # as this user, before Docker would as root
    sys.stdout.flush()
    try:
        process = subprocess.Popen(docker_command(spec))
    except FileNotFoundError as exc:
        raise LauncherError("docker is not installed (or not on PATH): tune --local runs the training image") from exc
    try:
        return process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached docker too: it passes the signal on to the container; wait for both to stop.
        return process.wait()
