"""The training job: fine-tune an ImageNet-pretrained network (:mod:`dogbreed.architectures`) on a
folder-per-class image set.

SageMaker runs the image's ``train`` (``python -m dogbreed.training``) with no
arguments; everything then comes from ``/opt/ml`` (see :mod:`.environment`). ``--help``
lists every flag. Exit status: 0 done, 1 failed (reason in ``/opt/ml/output/failure``),
2 bad hyperparameter or flag, 143 stopped by SIGTERM after saving a checkpoint.

This module is the entry point: the configuration, the log, the processes of a distributed
job, and the exit status; :func:`train` runs the stages of :mod:`.stages` in order.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from dogbreed.job_outputs import FEATURES_DIR
from dogbreed.training import stages
from dogbreed.training.checkpoints import TrainingState
from dogbreed.training.config import JobPaths, TrainConfig, load_config
from dogbreed.training.data import loader_failure, stop_loader_workers
from dogbreed.training.distributed import Distributed, init_distributed
from dogbreed.training.distributed import close as close_distributed
from dogbreed.training.environment import TrainingEnvironment
from dogbreed.training.failure import EXIT_SIGTERM, ConfigError, TrainingError, failure_reason, write_failure
from dogbreed.training.loop import GracefulStop, StopRequested

log = logging.getLogger("dogbreed.training")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record is logged (callers may swap it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def setup_logging() -> None:
    """Plain lines on stdout, which SageMaker sends to CloudWatch and matches metric regexes against."""
    logging.basicConfig(
        handlers=[_StdoutHandler()],
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def run(config: TrainConfig, paths: JobPaths, env: TrainingEnvironment, stop: GracefulStop) -> int:
    """The job proper; raises :class:`TrainingError` on expected failures."""
    device = stages.pick_device(config.device)
    distributed = init_distributed(device.type == "cuda", config.distributed_timeout)
    try:
        if distributed.enabled:
            config, device = join_processes(config, env, distributed)
            stop.distributed, stop.device = distributed, device
        log.info("hyperparameters: %s", " ".join(f"{k}={v}" for k, v in config.to_dict().items()))
        return train(config, paths, env, stop, device, distributed)
    finally:
        close_distributed(distributed)


def join_processes(
    config: TrainConfig, env: TrainingEnvironment, distributed: Distributed
) -> tuple[TrainConfig, torch.device]:
    """Settings for one of several processes: its GPU, a quiet log on all but rank 0, no feature cache."""
    if not distributed.is_main:  # one copy of every line (and of every metric line) in the job's log
        logging.getLogger("dogbreed").setLevel(logging.WARNING)
    log.info(
        "distributed: %d processes joined (world_size=%d) on hosts %s, master %s",
        distributed.world_size,
        distributed.world_size,
        ",".join(env.hosts) or env.current_host,
        env.hosts[0] if env.hosts else "local",
    )
    if config.use_features:
        if config.features == "on":
            raise ConfigError(
                f"features=on trains a head on cached features, which one process does in seconds; "
                f"run it on one instance with one GPU (this job has {distributed.world_size} processes)"
            )
        log.info(
            "features=auto: off with %d processes (each trains on its slice of the images)", distributed.world_size
        )
        config = dataclasses.replace(config, features="off")
    device = (
        torch.device("cuda", distributed.local_rank)
        if torch.cuda.is_available() and config.device != "cpu"
        else torch.device("cpu")
    )
    return config, device


def train(
    config: TrainConfig,
    paths: JobPaths,
    env: TrainingEnvironment,
    stop: GracefulStop,
    device: torch.device,
    distributed: Distributed,
) -> int:
    """Data, learner, (cached features), restore, epochs, finish; the exit status."""
    stages.seed_everything(config.seed)

    data = stages.load_data(config, paths, device, distributed)
    learner = stages.build_learner(config, paths, env, data, device, distributed)
    if config.use_features:
        try:
            cached = stages.use_cached_features(config, paths, data, learner, stop)
        except StopRequested:
            log.warning("SIGTERM: stopped while computing features; the caches already written are kept")
            return EXIT_SIGTERM
        except RuntimeError as exc:
            raise_loader_failure(exc)
            raise
        data, learner = cached.data, cached.learner
        if config.features_only:
            stages.write_metrics(config, paths, data, None, None)
            log.info(
                "features_only: feature caches written to %s; pass that folder, or this job's "
                "output.tar.gz, as the 'features' channel",
                paths.output_data_dir / FEATURES_DIR,
            )
            return 0
    state = stages.restore(config, paths, data, learner)
    if distributed.is_main:
        learner = stages.observe(config, paths, env, learner, state)
    try:
        stages.train_epochs(config, paths, data, learner, state, stop)
        if state.best is not None:
            stages.finish(config, paths, data, learner, state, state.best, stop)
    except StopRequested:
        if state.partial:
            log.warning(
                "SIGTERM: stopped during epoch %d; checkpoint saved to %s", state.partial.epoch, paths.checkpoint_dir
            )
        else:
            log.warning(
                "SIGTERM: stopped during the test pass or the export; the checkpoint of epoch %d in %s is kept",
                state.epoch,
                paths.checkpoint_dir,
            )
        return EXIT_SIGTERM
    except RuntimeError as exc:
        raise_loader_failure(exc)
        raise
    finally:
        learner.hook.close()
        learner.profiler.close()
    if not distributed.is_main:
        if state.best is None:
            raise TrainingError("training diverged: the validation loss was never finite (rank 0 reports it)")
        return 0
    if state.best is None:
        diverged(config, paths, data, state, learner.hook.out_dir)
    stages.write_job_report(config, paths, learner.hook.out_dir)
    return 0


def raise_loader_failure(exc: RuntimeError) -> None:
    """Raise the one-line failure of a dead or stuck loader worker, if ``exc`` is one (the caller
    re-raises any other)."""
    failure = loader_failure(exc)
    if failure is not None:
        raise failure from exc


def diverged(
    config: TrainConfig, paths: JobPaths, data: stages.Data, state: TrainingState, trial_dir: Path | None
) -> None:
    """No epoch had a finite validation loss: keep the history and the report (whose rules say
    why), export no model, and fail."""
    stages.write_metrics(config, paths, data, state, None)
    stages.write_job_report(config, paths, trial_dir)
    losses = ", ".join(f"{h.valid_loss:.4g}" for h in state.history)
    raise TrainingError(
        f"training diverged: the validation loss was never finite in {state.epoch} epochs ({losses}); no model "
        f"was exported. Lower lr (now {config.lr}); the report in {paths.output_data_dir} shows the Debugger rules"
    )


def main(argv: Sequence[str] | None = None, env: TrainingEnvironment | None = None) -> int:
    """Run the job; returns the exit status. Failures write ``/opt/ml/output/failure`` first.

    ``env``: the toolkit's (see :mod:`.toolkit`); by default the local tree of :meth:`TrainingEnvironment.from_env`.
    """
    setup_logging()
    env = env or TrainingEnvironment.from_env()

    def job(stop: GracefulStop) -> int:
        config, paths = load_config(argv, env)
        return run(config, paths, env, stop)

    return run_guarded("training", env, job)


def run_guarded(what: str, env: TrainingEnvironment, body: Callable[[GracefulStop], int]) -> int:
    """``body(stop)``'s exit status with SIGTERM turned into a flag; any failure becomes one line in
    the failure file and its exit status. Loader workers never outlive it."""
    stop = GracefulStop().install()
    try:
        return body(stop)
    except TrainingError as exc:
        reason = failure_reason(exc)
        write_failure(env.failure_path, reason)
        log.error("%s failed: %s", what, reason)
        return exc.exit_code
    except Exception as exc:
        reason = failure_reason(exc)
        write_failure(env.failure_path, reason)
        log.exception("%s failed with an unexpected error: %s", what, reason)
        return 1
    finally:
        stop_loader_workers()
        stop.uninstall()
