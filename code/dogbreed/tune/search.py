"""``python -m dogbreed.tune``: a local hyperparameter search on cached backbone features.

The frozen trunk runs once per image (the training job's feature cache, read from the
``features`` channel or the output folder when one matches); every trial then trains
only the head, so a trial costs seconds instead of a training job. Optuna's TPE sampler
proposes ``lr`` (log scale) and ``batch_size`` (and, on request, weight decay, label
smoothing and the optimizer); its median pruner stops trials whose validation accuracy
trails the others' at the same epoch. Each trial is the training job's own epoch loop,
printing the same metric lines SageMaker's tuner reads. The study lives in
``<output>/tune/study.db``: a stopped search continues where it was.

The search ends with the best hyperparameters, a trials table and ``tune.html``; then,
unless ``--no-final``, it runs the training job with them, which writes the model and
its report (from the same feature cache, so that costs seconds too).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from dogbreed.architectures import Architecture
from dogbreed.hyperparameters import AssignmentError, parse_assignments
from dogbreed.job_outputs import SEARCH_DIR
from dogbreed.training import job, stages
from dogbreed.training.checkpoints import TrainingState
from dogbreed.training.config import CLASS_WEIGHTS, OPTIMIZERS, JobPaths, TrainConfig, load_config
from dogbreed.training.environment import TrainingEnvironment
from dogbreed.training.failure import EXIT_SIGTERM, ConfigError, TrainingError
from dogbreed.training.feature_cache import SplitFeatures
from dogbreed.training.loop import GracefulStop, StopRequested
from dogbreed.training.metrics import EpochMetrics
from dogbreed.training.model import head_of
from dogbreed.tune.page import write_results

log = logging.getLogger("dogbreed.tune")

SEARCHABLE = ("lr", "batch_size", "weight_decay", "label_smoothing", "optimizer", "class_weights")


@dataclass(frozen=True)
class SearchSpace:
    """What the trials vary, and within which bounds."""

    names: tuple[str, ...] = ("lr", "batch_size")
    lr: tuple[float, float] = (1e-4, 1e-1)
    batch_sizes: tuple[int, ...] = (16, 32, 64)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    label_smoothing: tuple[float, float] = (0.0, 0.2)

    def __post_init__(self):
        unknown = set(self.names) - set(SEARCHABLE)
        if unknown or not self.names:
            raise ConfigError(f"--search takes some of {', '.join(SEARCHABLE)}; got {', '.join(self.names)}")
        if not 0 < self.lr[0] < self.lr[1]:
            raise ConfigError(f"need 0 < --lr-min < --lr-max, got {self.lr[0]} and {self.lr[1]}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"--batch-sizes must be positive integers, got {self.batch_sizes}")

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """One trial's hyperparameters."""
        params: dict[str, Any] = {}
        if "lr" in self.names:
            params["lr"] = trial.suggest_float("lr", *self.lr, log=True)
        if "batch_size" in self.names:
            params["batch_size"] = trial.suggest_categorical("batch_size", list(self.batch_sizes))
        if "weight_decay" in self.names:
            params["weight_decay"] = trial.suggest_float("weight_decay", *self.weight_decay, log=True)
        if "label_smoothing" in self.names:
            params["label_smoothing"] = trial.suggest_float("label_smoothing", *self.label_smoothing)
        if "optimizer" in self.names:
            params["optimizer"] = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
        if "class_weights" in self.names:  # each trial's criterion follows its own (stages.make_criterion)
            params["class_weights"] = trial.suggest_categorical("class_weights", list(CLASS_WEIGHTS))
        return params


@dataclass(frozen=True)
class Prepared:
    """What every trial shares: the data with its cached features, the network and its initial head."""

    config: TrainConfig
    paths: JobPaths
    data: stages.Data
    network: nn.Module  # the whole network; the trials train its head
    arch: Architecture
    features: Mapping[str, SplitFeatures]
    initial_head: dict[str, torch.Tensor]
    device: torch.device


def prepare(config: TrainConfig, paths: JobPaths, env: TrainingEnvironment, stop: GracefulStop) -> Prepared:
    """The training job's first stages, once: data, network (seeded as the job seeds it), feature caches."""
    stages.seed_everything(config.seed)
    device = stages.pick_device(config.device)
    data = stages.load_data(config, paths, device)
    learner = stages.build_learner(config, paths, env, data, device)
    cached = stages.use_cached_features(config, paths, data, learner, stop)
    network, arch = cached.learner.full_network, cached.learner.arch
    initial_head = copy.deepcopy(head_of(network, arch).state_dict())
    return Prepared(config, paths, cached.data, network, arch, cached.features, initial_head, device)


def run_trial(
    prepared: Prepared, config: TrainConfig, stop: GracefulStop, report_epoch: Callable[[EpochMetrics], None]
) -> TrainingState:
    """Train the head with ``config`` exactly as the training job would (same initial head, order, seeds)."""
    stages.seed_everything(config.seed)
    head_of(prepared.network, prepared.arch).load_state_dict(prepared.initial_head)
    learner = stages.head_learner(config, prepared.data, prepared.network, prepared.arch, prepared.device, amp=False)
    data = stages.feature_data(config, prepared.data, prepared.features, prepared.device)
    state = TrainingState(stages.job_identity(config, data))
    with tempfile.TemporaryDirectory(prefix="dogbreed-trial-") as checkpoints:
        paths = dataclasses.replace(prepared.paths, checkpoint_dir=Path(checkpoints))
        stages.train_epochs(config, paths, data, learner, state, stop, after_epoch=report_epoch)
    return state


def search(
    prepared: Prepared, space: SearchSpace, trials: int, timeout: float | None, out_dir: Path, stop: GracefulStop
) -> optuna.Study:
    """Run (or continue) the study in ``out_dir/study.db`` until it has ``trials`` finished trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name="dogbreed",
        storage=f"sqlite:///{out_dir / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=prepared.config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    done = sum(t.state.is_finished() for t in study.trials)
    if done:
        log.info("continuing the study in %s: %d trials already finished", out_dir / "study.db", done)

    def objective(trial: optuna.Trial) -> float:
        stop.check()
        params = space.suggest(trial)
        config = dataclasses.replace(prepared.config, **params)
        log.info(
            "trial %d: %s",
            trial.number,
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()),
        )
        curve: list[dict[str, float]] = []

        def report_epoch(metrics: EpochMetrics) -> None:
            curve.append(metrics.to_dict())
            trial.set_user_attr("history", curve)
            trial.report(metrics.valid_accuracy, metrics.epoch)
            if trial.should_prune():
                log.info(
                    "trial %d pruned after epoch %d (valid_accuracy=%.4f)",
                    trial.number,
                    metrics.epoch,
                    metrics.valid_accuracy,
                )
                raise optuna.TrialPruned()

        start = time.perf_counter()
        state = run_trial(prepared, config, stop, report_epoch)
        trial.set_user_attr("seconds", time.perf_counter() - start)
        if state.best is None:
            raise TrainingError("diverged: the validation loss was never finite")
        best = state.history[state.best.epoch - 1]
        trial.set_user_attr("best_epoch", state.best.epoch)
        log.info(
            "trial %d: valid_accuracy=%.4f valid_loss=%.4f (best epoch %d of %d)",
            trial.number,
            best.valid_accuracy,
            best.valid_loss,
            state.best.epoch,
            state.epoch,
        )
        return best.valid_accuracy

    remaining = max(0, trials - done)
    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=timeout, catch=(TrainingError,))
    return study


class _Parser(argparse.ArgumentParser):
    """A bad flag is a ConfigError, which the guarded run turns into the failure file and exit 2."""

    def error(self, message):
        raise ConfigError(f"command line: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The tuner's own flags; any other is the training job's."""
    parser = _Parser(
        prog="python -m dogbreed.tune",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="Any other flag is the training job's (python -m dogbreed.training --help): paths, and fixed "
        "hyperparameters such as --epochs 5 --arch resnet50.",
    )
    parser.add_argument("--trials", type=int, default=20, help="finished trials the study should have (default 20)")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument(
        "--search",
        default="lr,batch_size",
        help=f"what the trials vary, comma-separated, of {','.join(SEARCHABLE)} (default lr,batch_size)",
    )
    parser.add_argument("--lr-min", type=float, default=1e-4)
    parser.add_argument("--lr-max", type=float, default=1e-1)
    parser.add_argument("--batch-sizes", default="16,32,64", help="comma-separated (default 16,32,64)")
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a fixed hyperparameter of the trials, repeatable (as --NAME VALUE)",
    )
    parser.add_argument(
        "--no-final",
        dest="final",
        action="store_false",
        help="do not train the final model with the best hyperparameters",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, SearchSpace, list[str]]:
    """The tuner's own flags, its search space, and the rest: the training job's flags."""
    args, job_argv = build_parser().parse_known_args(argv)
    try:
        fixed = parse_assignments(args.hp)
    except AssignmentError as exc:
        raise ConfigError(str(exc)) from None
    for name, value in fixed.items():
        job_argv += [f"--{name}", value]
    try:
        batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    except ValueError:
        raise ConfigError(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}") from None
    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {args.trials}")
    space = SearchSpace(
        tuple(n.strip() for n in args.search.split(",") if n.strip()), (args.lr_min, args.lr_max), batch_sizes
    )
    return args, space, job_argv


def tune(argv: Sequence[str] | None, env: TrainingEnvironment, stop: GracefulStop) -> int:
    """Search, report, and train the final model; the exit status."""
    args, space, job_argv = parse_args(argv)
    config, paths = load_config(job_argv, env)
    fixed = set(space.names) & {a.lstrip("-").replace("-", "_") for a in job_argv if a.startswith("--")}
    if fixed:
        raise ConfigError(f"{', '.join(sorted(fixed))} are searched: do not also fix them")
    if not config.use_features:
        raise ConfigError(
            f"the search trains the head on cached features: it needs freeze=all and features "
            f"auto or on (now freeze={config.freeze}, features={config.features})"
        )
    out_dir = paths.output_data_dir / SEARCH_DIR
    log.info(
        "search: %d trials over %s; fixed: %s",
        args.trials,
        ", ".join(space.names),
        " ".join(f"{k}={v}" for k, v in config.to_dict().items() if k not in space.names),
    )
    start = time.perf_counter()
    prepared = prepare(config, paths, env, stop)
    study = search(prepared, space, args.trials, args.timeout, out_dir, stop)
    results = write_results(study, config, space.names, out_dir, time.perf_counter() - start)
    if results.best is None:
        raise TrainingError(f"no trial finished; see {out_dir / 'trials.csv'}")
    log.info(
        "best trial %d: valid_accuracy=%.4f with %s",
        results.best.number,
        results.best.value,
        " ".join(f"{k}={v}" for k, v in results.best.params.items()),
    )
    log.info("search results: %s", out_dir / "tune.html")
    if not args.final:
        return 0
    best = dataclasses.replace(config, **results.best.params)
    # Its own checkpoint folder: a stopped final run resumes, another final run never does.
    digest = hashlib.sha256(json.dumps(best.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    final_paths = dataclasses.replace(paths, checkpoint_dir=paths.checkpoint_dir / f"tune-final-{digest}")
    log.info("training the final model with the best hyperparameters")
    return job.run(best, final_paths, env, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 done, 1 failed (reason in the failure file), 2 bad flag, 143 stopped by SIGTERM."""
    job.setup_logging()
    env = TrainingEnvironment.from_env()

    def search_then_train(stop: GracefulStop) -> int:
        try:
            return tune(argv, env, stop)
        except StopRequested:
            log.warning("SIGTERM: search stopped; run the same command again to continue the study")
            return EXIT_SIGTERM

    return job.run_guarded("tuning", env, search_then_train)
