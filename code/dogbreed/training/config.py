"""Every hyperparameter of the training job: its type, default, meaning and valid range.

Values come, in order of precedence, from a command-line flag (``--batch_size 64`` or
``--batch-size 64``), SageMaker's ``hyperparameters.json`` and the defaults below.
SageMaker sends every hyperparameter as a string, and newer SDKs JSON-encode them
(``"\\"0.01\\""``), so both ``"64"`` and ``"\\"64\\""`` mean 64.
"""

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from dogbreed.architectures import ARCH_NAMES, DEFAULT_ARCH, architecture
from dogbreed.cpus import usable_cpus
from dogbreed.hyperparameters import decode_hyperparameter
from dogbreed.input_channels import FEATURES_CHANNEL, MODEL_CHANNEL, PRETRAINED_CHANNEL
from dogbreed.training.environment import TrainingEnvironment
from dogbreed.training.failure import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
FEATURES_CHOICES = ("auto", "on", "off")
CLASS_WEIGHTS = ("none", "balanced")
ON_LEAKAGE = ("warn", "fail")
# Keys SageMaker itself adds to hyperparameters.json; accepted and ignored.
SAGEMAKER_KEY = re.compile(r"^(sagemaker_.*|_tuning_objective_metric)$")


def _default_workers() -> int:
    """Loader workers unless set: one per usable CPU, at most 4."""
    return min(4, usable_cpus())


def hp(default: Any = None, help: str = "", choices: Sequence[str] | None = None, default_factory=None):
    """A hyperparameter field: its help text (and choices) feed ``--help`` and validation."""
    meta = {"help": help, "choices": tuple(choices) if choices else None}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """The training hyperparameters, validated on construction."""

    arch: str = hp(
        DEFAULT_ARCH,
        "the ImageNet network to fine-tune: a torchvision ResNet, or EfficientNet-Lite0 (timm; its ImageNet weights "
        "come with the image, so it needs no download and no pretrained channel)",
        ARCH_NAMES,
    )
    pretrained: str = hp(
        "imagenet",
        "'imagenet' (from the pretrained channel; then for efficientnet_lite0 the weights installed in the image, "
        "for a ResNet TORCH_HOME's cache or a download), "
        "'none' (random init, from scratch), or a path to a .pth/.pt state_dict",
    )
    freeze: str = hp(
        "all",
        "'all': train only the new final layer; 'none': train everything; a stage name freezes the stem up to "
        "and including that stage: layer1..layer4 for a ResNet, blocks.0..blocks.6 or conv_head for "
        "efficientnet_lite0",
    )
    epochs: int = hp(10, "maximum number of epochs")
    patience: int = hp(3, "stop after this many epochs without a lower valid loss (0: never stop early)")
    batch_size: int = hp(32, "images per batch")
    lr: float = hp(0.001, "learning rate")
    optimizer: str = hp("adam", "optimizer", OPTIMIZERS)
    momentum: float = hp(0.9, "momentum (sgd only)")
    weight_decay: float = hp(0.0, "weight decay (L2 penalty)")
    lr_scheduler: str = hp("none", "learning-rate schedule over the epochs", SCHEDULERS)
    lr_step_size: int = hp(5, "epochs between learning-rate drops (lr_scheduler=step)")
    lr_gamma: float = hp(0.1, "learning-rate multiplier at each drop (lr_scheduler=step)")
    label_smoothing: float = hp(0.0, "label smoothing of the cross-entropy loss")
    class_weights: str = hp(
        "none",
        "weights of the classes in the loss: 'balanced' weighs class c by N / (C * n_c), from the train split's "
        "counts (sklearn's convention), so that every class counts as much in total; 'none': all 1",
        CLASS_WEIGHTS,
    )
    on_leakage: str = hp(
        "warn",
        "the data check before the first epoch finds the same file (content hash) in two splits: 'warn' names "
        "them in the log and the report, 'fail' fails the job",
        ON_LEAKAGE,
    )
    augment: bool = hp(True, "random resized crops and flips of the training images; off: the evaluation transform")
    features: str = hp(
        "auto",
        "train the head on cached backbone features: the frozen network's outputs are computed once per "
        "split (and read from the 'features' channel when it holds a matching cache). 'auto': on when freeze=all",
        FEATURES_CHOICES,
    )
    feature_views: int = hp(
        2,
        "with features and augment on: augmented views cached per training image; each epoch draws one "
        "per image (augment off: the evaluation view only)",
    )
    features_only: bool = hp(
        False, "compute the feature cache into the output (features/ beside metrics.json) and stop: a features job"
    )
    image_size: int = hp(224, "side of the square crop the network sees")
    resize_size: int = hp(256, "evaluation: the shorter side is resized to this before the centre crop")
    label_attribute: str = hp(
        "", "a Ground Truth manifest's label attribute, where its records carry several (default: the only one)"
    )
    max_unreadable_fraction: float = hp(0.05, "fail when more than this fraction of a split's images cannot be decoded")
    num_workers: int = hp(
        help="DataLoader worker processes (0: load in the main process)", default_factory=_default_workers
    )
    loader_timeout: float = hp(
        120.0,
        "seconds to wait for one batch from the DataLoader workers: a dead or stuck worker fails the job "
        "after at most this long instead of hanging it",
    )
    distributed_timeout: float = hp(
        600.0,
        "with several processes (hosts or GPUs): seconds to wait for the others to join and for any exchange "
        "between them; a host that never comes or dies fails the job after at most this long",
    )
    seed: int = hp(0, "random seed (weights of the new layer, shuffling, augmentation)")
    device: str = hp("auto", "'auto' uses CUDA when available", DEVICES)
    amp: bool = hp(False, "mixed precision (float16 autocast) on CUDA")
    debug: bool = hp(
        True,
        "record the job's SageMaker Debugger (smdebug) trial: losses and accuracy per step, reductions of "
        "weights, gradients and activations; the report's curves and rules read it. off: no trial",
    )
    profile: bool = hp(
        True,
        "record the profile: system utilisation, each step's time split, top operators (torch.profiler) "
        "and its TensorBoard trace. off: none",
    )
    smdebug_dir: str = hp(
        "",
        "where the local smdebug trial goes [default: debug-output beside metrics.json]; SageMaker "
        "Debugger's config wins when present",
    )
    int8: bool = hp(
        True,
        "also export model.int8.onnx, statically quantized with ONNX Runtime (QDQ, uint8 activations, int8 per-channel "
        "weights), and record its and model.onnx's valid top-1 in model.json; the endpoint serves it when it "
        "loses little. A failed quantization fails the job. off: model.onnx only",
    )
    int8_calibration_images: int = hp(
        128,
        "training images (evaluation view, drawn at random) that calibrate the int8 activation ranges; "
        "capped at the train split's readable images",
    )
    int8_calibration: str = hp(
        "auto",
        "how the int8 activation ranges are set: 'minmax' (the calibration images' extremes), 'percentile' (the "
        "99.999th percentile of their histogram, which outliers cannot stretch; slower), or 'auto': the "
        "architecture's (percentile for efficientnet_lite0, minmax for the ResNets)",
        ("auto", "minmax", "percentile"),
    )
    # On x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake), ONNX Runtime's int8 kernels add
    # pairs of 8-bit products into 16 bits, which can saturate; 7-bit weights cannot. The serving CPU
    # is unknown here, so the safe range is the default: the accuracy measured is the one served.
    int8_reduce_range: bool = hp(
        True,
        "quantize weights to 7 bits, which no x86 CPU's int8 kernels can saturate; false (8 bits, a little "
        "more precise) only for endpoints on CPUs with VNNI, where 8-bit weights cannot saturate either",
    )

    def __post_init__(self):
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"hyperparameter {f.name}={value!r} is not one of: {', '.join(choices)}")
        checks = [
            ("lr", self.lr > 0, "must be > 0"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("patience", self.patience >= 0, "must be >= 0"),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("lr_step_size", self.lr_step_size >= 1, "must be >= 1"),
            ("lr_gamma", 0 < self.lr_gamma <= 1, "must be in (0, 1]"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            ("image_size", self.image_size >= 32, "must be >= 32 (the networks downsample 32x)"),
            ("resize_size", self.resize_size >= self.image_size, f"must be >= image_size ({self.image_size})"),
            ("max_unreadable_fraction", 0 <= self.max_unreadable_fraction <= 1, "must be in [0, 1]"),
            ("num_workers", self.num_workers >= 0, "must be >= 0"),
            ("loader_timeout", self.loader_timeout > 0, "must be > 0 (seconds)"),
            ("feature_views", self.feature_views >= 1, "must be >= 1"),
            ("distributed_timeout", self.distributed_timeout > 0, "must be > 0 (seconds)"),
            ("int8_calibration_images", self.int8_calibration_images >= 1, "must be >= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"hyperparameter {name}={getattr(self, name)!r} {rule}")
        freeze_choices = architecture(self.arch).freeze_choices
        if self.freeze not in freeze_choices:
            raise ConfigError(
                f"hyperparameter freeze={self.freeze!r} is not one of {self.arch}'s: {', '.join(freeze_choices)}"
            )
        if self.pretrained not in ("imagenet", "none") and not Path(self.pretrained).is_file():
            raise ConfigError(
                f"hyperparameter pretrained={self.pretrained!r} is neither 'imagenet', 'none' "
                "nor an existing weights file"
            )

        if self.features == "on" and self.freeze != "all":
            raise ConfigError(
                f"hyperparameter features=on needs freeze=all (now freeze={self.freeze}): a backbone that "
                "trains has no fixed features to cache"
            )
        if self.features_only and not self.use_features:
            raise ConfigError("hyperparameter features_only=true needs features on (features=auto|on, freeze=all)")

    @property
    def int8_calibration_method(self) -> str:
        """``int8_calibration``, resolved: ``minmax`` or ``percentile``."""
        if self.int8_calibration == "auto":
            return architecture(self.arch).int8_calibration
        return self.int8_calibration

    @property
    def use_features(self) -> bool:
        """Whether the head trains on cached backbone features (``features``, resolved)."""
        return self.features == "on" or (self.features == "auto" and self.freeze == "all")

    @property
    def cached_views(self) -> int:
        """Views of each training image in the feature cache: augmented ones, or the evaluation view."""
        return self.feature_views if self.augment else 1

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "hyperparameters.json") -> "TrainConfig":
        """Build from string (or JSON-encoded, or already typed) values; unknown keys are an error."""
        return cls(**parse_values(values, source))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_values(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Typed values for the known keys of ``values``; SageMaker's own keys are dropped."""
    types = get_type_hints(TrainConfig)
    parsed = {}
    for key, raw in values.items():
        name = key.replace("-", "_")
        if SAGEMAKER_KEY.match(name):
            continue
        if name not in types:
            raise ConfigError(
                f"unknown hyperparameter {key!r} in {source}; valid hyperparameters: " + ", ".join(TrainConfig.names())
            )
        parsed[name] = _convert(name, raw, types[name], source)
    return parsed


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _convert(name: str, raw: Any, typ: type, source: str) -> Any:
    # A string as SageMaker sent it (maybe JSON-encoded), or a value the toolkit already typed.
    value = decode_hyperparameter(raw) if isinstance(raw, str) else raw
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        # A string hyperparameter: keep what the user wrote, minus JSON quoting.
        return value if isinstance(value, str) else str(raw)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"hyperparameter {name}={raw!r} (from {source}) is not a valid {typ.__name__}") from None


@dataclass(frozen=True)
class JobPaths:
    """The directories one run reads and writes (the environment's, unless a flag says otherwise)."""

    train: Path
    valid: Path
    test: Path
    pretrained: Path
    features: Path  # the optional channel holding a feature cache (files or an output.tar.gz)
    model_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    previous_model: Path | None = None  # the optional 'model' channel: an earlier job's model to start from


_PATH_FLAGS = {
    "train": "the train channel: one folder per class, or a manifest and its images",
    "valid": "the valid channel",
    "test": "the test channel (optional; test metrics are skipped without it)",
    "model_dir": "where model.pt, model.onnx, model.int8.onnx and model.json go",
    "output_data_dir": "where metrics.json and the confusion matrices go",
    "checkpoint_dir": "where checkpoint.pt is written each epoch and resumed from",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a bad flag is a config error: failure file + exit 2
        raise ConfigError(f"command line: {message}")


def build_parser(env: TrainingEnvironment) -> argparse.ArgumentParser:
    """``--help`` lists every hyperparameter under its own name, plus the path flags."""
    parser = _Parser(
        prog="python -m dogbreed.training",
        description="Fine-tune an ImageNet-pretrained network on a folder-per-class image set "
        "(SageMaker training contract; with no arguments everything comes from /opt/ml).",
    )
    types = get_type_hints(TrainConfig)
    group = parser.add_argument_group("hyperparameters (override hyperparameters.json)")
    for f in fields(TrainConfig):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        default = f.default_factory() if f.default is MISSING and callable(f.default_factory) else f.default
        choices = f.metadata.get("choices")
        help_text = f.metadata["help"] + (f" ({'|'.join(choices)})" if choices else "") + f" [default: {default!r}]"
        # SUPPRESS: only flags actually given override hyperparameters.json.
        group.add_argument(
            *flags, dest=f.name, default=argparse.SUPPRESS, metavar=types[f.name].__name__.upper(), help=help_text
        )
    paths = parser.add_argument_group("paths (default: the SageMaker locations)")
    env_paths = _env_paths(env)
    for name, help_text in _PATH_FLAGS.items():
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        paths.add_argument(
            *flags,
            dest=name,
            type=Path,
            metavar="DIR",
            default=env_paths[name],
            help=f"{help_text} [default: {env_paths[name]}]",
        )
    return parser


def _env_paths(env: TrainingEnvironment) -> dict[str, Path]:
    return {
        "train": env.channels["train"],
        "valid": env.channels["valid"],
        "test": env.channels["test"],
        "model_dir": env.model_dir,
        "output_data_dir": env.output_data_dir,
        "checkpoint_dir": env.checkpoint_dir,
    }


def load_config(argv: Sequence[str] | None, env: TrainingEnvironment) -> tuple[TrainConfig, JobPaths]:
    """Merge flags over ``hyperparameters.json`` over defaults; raise :class:`ConfigError` on anything bad."""
    args = vars(build_parser(env).parse_args(argv))
    path_values = {name: args.pop(name) for name in _PATH_FLAGS}
    values = parse_values(env.hyperparameters(), env.hyperparameters_source)
    values.update(parse_values(args, "the command line"))
    config = TrainConfig(**values)
    paths = JobPaths(
        pretrained=env.channels[PRETRAINED_CHANNEL],
        features=env.channels[FEATURES_CHANNEL],
        previous_model=env.channels[MODEL_CHANNEL],
        **path_values,
    )
    return config, paths
