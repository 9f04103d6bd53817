"""The image's ``train``: sagemaker-training's entry point, with this module as its training module.

The image's ``train`` runs :func:`train`, which checks the contract's config files (a bad one
ends the job with one line naming it, exit 2) and hands over to the toolkit's own ``train``.
The image sets ``SAGEMAKER_TRAINING_MODULE=dogbreed.training.toolkit:main``, so the
toolkit parses the SageMaker contract into its ``Environment`` and calls :func:`main`,
which runs one of:

- **the user's own script** (script mode: the ``sagemaker_program`` and
  ``sagemaker_submit_directory`` hyperparameters), through the toolkit's runner, as
  SageMaker's framework containers do;
- **the training job** in this very process, on one host with at most one GPU, so that
  SIGTERM reaches it directly (checkpoint, exit 143);
- **the training job on several processes**, one per GPU on every host (one per host on
  CPUs), through the toolkit's torchrun runner (``runner_type=TorchDistributedRunnerType``,
  ``capture_error=True``, so that torchrun's exit status is checked); each process runs
  :func:`run_process` (see :mod:`.distributed`). SIGTERM is passed on to torchrun, which
  passes it to the processes: they checkpoint and the job exits 143 as a single one does.

The toolkit exits 0 (after writing its success file) whatever an entry point returns,
so a failed job leaves with its own status here, after its failure file is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
from sagemaker_training import entry_point, environment, runner, trainer

from dogbreed.training.environment import (
    LONE_HOST,
    TrainingEnvironment,
    check_config_files,
    one_host_resource_config,
)
from dogbreed.training.failure import EXIT_SIGTERM, ConfigError, failure_reason, write_failure

TORCHRUN_SCRIPT = Path(__file__).parent / "torchrun" / "dogbreed_train.py"

log = logging.getLogger("dogbreed.training")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The toolkit logs "Failed to parse hyperparameter arch value resnet18 to Json. Returning the
# value itself" for every plain-string hyperparameter, each time it reads them; the job decodes
# plain and JSON values alike (dogbreed.hyperparameters.decode_hyperparameter), so the line is
# only noise that reads as a fault. Dropped at the toolkit's logger, from the import on: the
# toolkit imports this module before it configures its logging and reads them again (in main,
# in each of torchrun's processes), and its other lines still pass.
TOOLKIT_LOGGER = "sagemaker-training-toolkit"
NOT_JSON_NOTE = "Failed to parse hyperparameter "


def drop_not_json_note(record: logging.LogRecord) -> bool:
    """A logging filter: drops (False) the toolkit's note that a hyperparameter is not JSON, keeps the rest."""
    return not str(record.msg).startswith(NOT_JSON_NOTE)


logging.getLogger(TOOLKIT_LOGGER).addFilter(drop_not_json_note)

# SageMaker always writes resourceconfig.json; a tree made by hand may leave it out, which means
# one host. The toolkit reads the file each time it builds its Environment, in every process (its
# trainer and runners, main here, each of torchrun's), so its reader is replaced, from the import
# of this module on, by one that answers one host where the file is missing; main logs it once.
_read_resource_config = environment.read_resource_config


def resource_config_exists() -> bool:
    """Whether the tree has a ``resourceconfig.json`` (SageMaker's always does)."""
    return Path(environment.resource_config_file_dir).exists()


def resource_config_or_one_host() -> dict[str, Any]:
    """``resourceconfig.json`` as the toolkit reads it, or one host where the file is missing."""
    if not resource_config_exists():
        return one_host_resource_config()
    return _read_resource_config()


environment.read_resource_config = resource_config_or_one_host


def train() -> None:
    """The image's ``train``: the contract's config files checked, then the toolkit's ``train``.

    The toolkit reads them before it imports this module, and a missing or malformed one would
    end the job in its traceback; here it ends in one line naming the file (exit 2, as a bad
    hyperparameter does). Never returns.
    """
    try:
        check_config_files(Path(environment.input_config_dir))
    except ConfigError as exc:
        reason = failure_reason(exc)
        write_failure(Path(environment.output_dir) / "failure", reason)
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        log.error("training failed: %s", reason)
        sys.exit(exc.exit_code)
    trainer.train()


def main() -> None:
    """Run what the toolkit's Environment asks for; return only on success."""
    if not resource_config_exists():
        log.info("one host, %s: %s is missing (a tree made by hand)", LONE_HOST, environment.resource_config_file_dir)
    env = environment.Environment()
    if len(env.hosts) == 1:
        # The runner first waits (up to 15 minutes, silently) until every host's name resolves,
        # which only a cluster needs; a lone container started by hand is not named algo-1.
        os.environ["SM_STUDIO_LOCAL_MODE"] = "true"
    if env.user_entry_point:
        log.info("script mode: running %s from %s", env.user_entry_point, env.module_dir)
        # capture_error=True: the runner then checks the script's exit status (and keeps its stderr).
        entry_point.run(
            env.module_dir,
            env.user_entry_point,
            env.to_cmd_args(),
            env.to_env_vars(),
            capture_error=True,
            runner_type=runner.ProcessRunnerType,
        )
        return
    processes = len(env.hosts) * max(1, int(env.num_gpus))
    if processes > 1:
        run_distributed(env, processes)
        return
    status = run_process(env)
    if status:
        leave(status)


def run_process(env=None) -> int:
    """The training job in this process, with the toolkit's environment; its exit status."""
    from dogbreed.training.job import main as run_job  # noqa: PLC0415 - torch only where the job runs (not script mode, torchrun's parent)

    return run_job([], TrainingEnvironment.from_toolkit(env or environment.Environment()))


def run_distributed(env, processes: int) -> None:
    """torchrun over every host and GPU; SIGTERM goes on to it (and on to the processes)."""
    stopped = []

    def pass_on(signum, frame):
        # To torchrun itself, which stops its processes and waits for them (they checkpoint);
        # the runner's /bin/sh between us would just die and leave them running.
        stopped.append(signum)
        descendants = psutil.Process().children(recursive=True)
        torchruns = [p for p in descendants if any(arg.endswith("torchrun") for arg in _cmdline(p)[:2])]
        for process in torchruns or descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, pass_on)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    log.info(
        "distributed: %d processes on %d host(s) (%s), master %s",
        processes,
        len(env.hosts),
        ",".join(env.hosts),
        env.master_hostname,
    )
    try:
        entry_point.run(
            str(TORCHRUN_SCRIPT.parent),
            TORCHRUN_SCRIPT.name,
            [],
            env.to_env_vars(),
            capture_error=True,
            runner_type=runner.TorchDistributedRunnerType,
        )
    except Exception:
        if stopped:  # the processes checkpointed and exited 143; that is no failure
            leave(EXIT_SIGTERM)
        raise
    if stopped:
        leave(EXIT_SIGTERM)


def leave(status: int) -> None:
    """Exit with ``status`` now: the toolkit's own exit would turn it into 0 (or a failure file of its own)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except Exception:  # noqa: BLE001 - a process that ended or cannot be read is not torchrun
        return []
