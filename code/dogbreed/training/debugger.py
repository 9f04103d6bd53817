"""SageMaker Debugger (smdebug) hook: from the job's debughookconfig.json, or a local trial.

Without either there is no hook, and smdebug is never imported (its import alone takes
seconds and logs to stdout). smdebug 1.0.34 works with torch 2.x for what we use: module
forward hooks, ``Tensor.register_hook`` on trainable parameters and the loss module's
output; its autograd-profiler paths (only used when SageMaker's profiler config is on)
check torch versions up to 1.8 and simply log that detailed profiling is unsupported.
Note that smdebug catches and logs its own errors instead of raising them, so a broken
hook shows up as a missing trial, not as a failed job; the unit tests read the trial back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from dogbreed.training.failure import TrainingError

log = logging.getLogger(__name__)


class NoHook:
    """Stands in when debugging is off, so the training loop has no ``if hook`` branches."""

    def set_mode(self, mode: str) -> None:
        pass

    def close(self) -> None:
        pass


class SmdebugHook:
    """A thin wrapper over ``smdebug.pytorch.Hook`` with string modes ("train"/"eval")."""

    def __init__(self, hook: Any, smd: Any):
        self.hook, self._smd = hook, smd

    def set_mode(self, mode: str) -> None:
        self.hook.set_mode({"train": self._smd.modes.TRAIN, "eval": self._smd.modes.EVAL}[mode])

    def close(self) -> None:
        self.hook.close()


def create_hook(config_path: Path, local_dir: str, model: nn.Module, criterion: nn.Module):
    """A hook registered on ``model`` and ``criterion``, or :class:`NoHook`.

    SageMaker's ``debughookconfig.json`` (written when the estimator has a
    DebuggerHookConfig or rules) wins; else ``local_dir`` makes a local trial that saves
    the losses at every step.
    """
    has_config = Path(config_path).is_file()
    if not has_config and not local_dir:
        return NoHook()
    import smdebug.pytorch as smd  # noqa: PLC0415 - only paid for when debugging is on

    if has_config:
        if local_dir:
            log.warning("smdebug: SageMaker's %s is used; smdebug_dir=%s is ignored", config_path, local_dir)
        # What smd.get_hook(create_if_not_exists=True) does, minus its singleton: get_hook
        # returns any hook already created in this process and ignores the config then.
        # Hook.__init__ makes the new hook the singleton, as get_hook would.
        hook = smd.Hook.create_from_json_file(str(config_path))
        if hook is None:
            log.warning("smdebug: no hook could be created from %s; debugging is off", config_path)
            return NoHook()
        source = str(config_path)
    else:
        if Path(local_dir).is_dir() and any(Path(local_dir).iterdir()):
            # smdebug refuses to mix two runs' tensors, and would only log that refusal.
            raise TrainingError(f"smdebug_dir {local_dir} is not empty; give a new directory for the trial")
        hook = smd.Hook(
            out_dir=local_dir,
            save_config=smd.SaveConfig(save_interval=1),
            include_collections=["losses"],
        )
        source = f"local trial in {local_dir}"
    hook.register_module(model)
    hook.register_loss(criterion)
    log.info("smdebug: hook registered (%s)", source)
    return SmdebugHook(hook, smd)
