"""SageMaker Debugger (smdebug) hook: from the job's debughookconfig.json, or a local trial.

Without either there is no hook, and smdebug is never imported (its import alone takes
seconds and logs to stdout). smdebug 1.0.34 works with torch 2.x for what we use: module
forward hooks, ``Tensor.register_hook`` on trainable parameters and the loss module's
output; its autograd-profiler paths (only used when SageMaker's profiler config is on)
check torch versions up to 1.8 and simply log that detailed profiling is unsupported.
Note that smdebug catches and logs its own errors instead of raising them, so a broken
hook shows up as a missing trial, not as a failed job; the unit tests read the trial back.

What a trial holds, for the built-in rules of :mod:`dogbreed.report.rules`:

* ``losses``: the loss module's output, every step of every mode (a scalar each);
* ``gradients`` (``gradient/ResNet_<param>``) and ``relu_input`` (``<module>_input_<n>``,
  the n-th call of that ReLU module in the step: torchvision's ResNet blocks call one
  ``relu`` module 2 or 3 times): REDUCTIONS only, no raw tensors, at the first
  :data:`DETAIL_STEPS` training steps and then every :data:`DETAIL_INTERVAL` training
  steps. A ten-epoch ResNet50 trial on the dog images stays a few MB.

Steps carry on across a stopped and resumed job: save :meth:`SmdebugHook.steps` with the
checkpoint and give it back as ``create_hook(..., resume_steps=...)``; only then may the
trial directory already hold data (the stopped job's).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from dogbreed.training.failure import TrainingError

log = logging.getLogger(__name__)

DETAIL_STEPS = 10  # PoorWeightInitialization looks at the first 10 steps (its `steps` default)
DETAIL_INTERVAL = 100  # training steps between later reductions: VanishingGradient & co. keep watching
RELU_INPUT_REGEX = ".*relu_input"  # PoorWeightInitialization's default activation_inputs_regex
# smdebug's markers in a trial directory (smdebug.core.config_constants): a job that ended,
# and the process that writes. A stopped job leaves the first, a killed one the second.
_END_OF_JOB_FILE = "training_job_end.ts"
_CLAIM_FILE = "claim.smd"


@dataclass(frozen=True)
class RuleCollection:
    """A collection the rules read: which reductions are saved, at the detail steps."""

    name: str
    reductions: tuple[str, ...]
    abs_reductions: tuple[str, ...] = ()
    include_regex: str | None = None


# Few reductions, each about 240 bytes on disk per tensor and step. The abs mean serves
# VanishingGradient and ExplodingTensor (NaN if the tensor holds a NaN, inf if an inf);
# std, variance and the shapes serve PoorWeightInitialization (gradient spread, variance of
# activation inputs). No rule reads the weights: NaN weights show in the loss and gradients.
RULE_COLLECTIONS = (
    RuleCollection("gradients", ("std",), ("mean",)),
    RuleCollection("relu_input", ("variance",), ("mean",), include_regex=RELU_INPUT_REGEX),
)


class DebugHook(Protocol):
    """What the passes, the checkpoints and the job use of a hook: :class:`NoHook` or :class:`SmdebugHook`."""

    @property
    def recording(self) -> bool:
        """Whether values given to :meth:`save_scalar` are kept (skip computing them if not)."""
        ...

    @property
    def out_dir(self) -> Path | None:
        """Where the trial is written (None: no trial)."""
        ...

    def set_mode(self, mode: str) -> None: ...

    def save_scalar(self, name: str, value: float) -> None: ...

    def close(self) -> None: ...

    def steps(self) -> dict[str, int]: ...

    def restore_steps(self, steps: Mapping[str, int]) -> None: ...


class NoHook:
    """Stands in when debugging is off, so the training loop has no ``if hook`` branches."""

    recording = False  # whether values given to save_scalar are kept (skip computing them if not)
    out_dir = None  # where the trial is written

    def set_mode(self, mode: str) -> None:
        pass

    def save_scalar(self, name: str, value: float) -> None:
        pass

    def close(self) -> None:
        pass

    def steps(self) -> dict[str, int]:
        return {}

    def restore_steps(self, steps: Mapping[str, int]) -> None:
        pass


class SmdebugHook:
    """A thin wrapper over ``smdebug.pytorch.Hook`` with string modes ("train"/"eval")."""

    recording = True

    def __init__(self, hook: Any, smd: Any):
        self.hook, self._smd = hook, smd

    @property
    def out_dir(self) -> Path:
        """The trial's folder: the local one, or SageMaker Debugger's LocalPath (uploaded to S3)."""
        return Path(self.hook.out_dir)

    def set_mode(self, mode: str) -> None:
        self.hook.set_mode({"train": self._smd.modes.TRAIN, "eval": self._smd.modes.EVAL}[mode])

    def save_scalar(self, name: str, value: float) -> None:
        """``value`` in the trial as ``scalar/<name>``, at the current step (the last one started).

        smdebug writes it when the next step starts, into the current step's files: the
        trial's index keeps that step's mode even across a mode change in between.
        """
        self.hook.save_scalar(name, value)

    def close(self) -> None:
        self.hook.close()

    def steps(self) -> dict[str, int]:
        """The last step numbers used, per mode name ("GLOBAL", "TRAIN", "EVAL"), for the checkpoint."""
        steps = {mode.name: int(step) for mode, step in self.hook.mode_steps.items()}
        steps["GLOBAL"] = int(self.hook.step)
        return steps

    def restore_steps(self, steps: Mapping[str, int]) -> None:
        """Continue the numbering of :meth:`steps` from a stopped job; call before the first step."""
        if self.hook.prepared_collections:
            raise RuntimeError("smdebug step numbers can only be restored before the first step")
        modes = self._smd.modes
        self.hook.mode_steps = {modes[name]: int(step) for name, step in steps.items()}
        self.hook.step = int(steps.get("GLOBAL", self.hook.step))
        self.hook.mode_steps[modes.GLOBAL] = self.hook.step


def create_hook(
    config_path: Path,
    local_dir: str,
    model: nn.Module,
    criterion: nn.Module,
    resume_steps: Mapping[str, int] | None = None,
    tensorboard_dir: str | None = None,
) -> DebugHook:
    """A hook registered on ``model`` and ``criterion``, or :class:`NoHook`.

    SageMaker's ``debughookconfig.json`` (written when the estimator has a
    DebuggerHookConfig or rules) wins, with the collections of :data:`RULE_COLLECTIONS`
    added where it lacks them; else ``local_dir`` makes a local trial (see the module's
    docstring). ``resume_steps`` (a stopped job's :meth:`SmdebugHook.steps`) continues
    its step numbering, and lets ``local_dir`` hold that job's trial.
    """
    has_config = Path(config_path).is_file()
    if not has_config and not local_dir:
        return NoHook()
    with _smdebug_log_level("warning"):  # smdebug reads it once, at import; one INFO line per parameter else
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
        _prepare_local_dir(Path(local_dir), resuming=resume_steps is not None)
        # tensorboard_dir: the losses and the scalars the job saves also become TensorBoard
        # scalars (SageMaker's own config carries its TensorBoardOutputConfig instead).
        hook = smd.Hook(
            out_dir=local_dir,
            save_config=smd.SaveConfig(save_interval=1),
            include_collections=["losses"],
            tensorboard_dir=tensorboard_dir,
        )
        source = f"local trial in {local_dir}"
    added = _add_rule_collections(hook, smd)
    hook.register_module(model)
    if "relu_input" in hook.include_collections:
        _record_relu_inputs(model, hook)  # after register_module: smdebug's pre-hook advances the step first
    hook.register_loss(criterion)
    wrapper = SmdebugHook(hook, smd)
    if resume_steps is not None:
        wrapper.restore_steps(resume_steps)
    log.info(
        "smdebug: hook registered (%s; rule collections added: %s; steps from %s)",
        source,
        ", ".join(added) or "none",
        wrapper.steps()["GLOBAL"] + 1,
    )
    return wrapper


def _prepare_local_dir(local_dir: Path, resuming: bool) -> None:
    """Refuse a used directory for a new job; reopen a stopped job's trial for a resumed one."""
    used = local_dir.is_dir() and any(local_dir.iterdir())
    if used and not resuming:
        # smdebug refuses to mix two runs' tensors, and would only log that refusal.
        raise TrainingError(f"smdebug_dir {local_dir} is not empty; give a new directory for the trial")
    if used:
        # smdebug refuses a directory whose job has ended, and a stale claim (a killed job's)
        # would make this process think another one writes the trial.
        for marker in (_END_OF_JOB_FILE, _CLAIM_FILE):
            (local_dir / marker).unlink(missing_ok=True)


def _add_rule_collections(hook: Any, smd: Any) -> list[str]:
    """Include the collections the rules read, where the hook's config does not name them."""
    from smdebug.core.save_config import SaveConfigMode  # noqa: PLC0415 - smdebug only when debugging is on

    never = SaveConfigMode(save_steps=[], start_step=0, end_step=0)
    detail = SaveConfigMode(save_interval=DETAIL_INTERVAL, save_steps=list(range(DETAIL_STEPS)))
    save_config = smd.SaveConfig(
        mode_save_configs={mode: detail if mode == smd.modes.TRAIN else never for mode in smd.modes}
    )
    added = []
    for spec in RULE_COLLECTIONS:
        if spec.name in hook.include_collections:
            continue  # SageMaker's config names it: its settings win
        collection = hook.get_collection(spec.name)
        if spec.include_regex:
            collection.include(spec.include_regex)
        collection.save_config = save_config
        collection.reduction_config = smd.ReductionConfig(
            reductions=list(spec.reductions),
            abs_reductions=list(spec.abs_reductions),
            save_raw_tensor=False,
            save_shape=True,
        )
        hook.include_collections.append(spec.name)
        added.append(spec.name)
    return added


def _record_relu_inputs(model: nn.Module, hook: Any) -> None:
    """Run the ReLUs out of place on the steps that save ``relu_input``, in place on the others.

    torchvision's ReLUs rectify in place, and smdebug's forward hook runs afterwards: its
    ``relu_input`` would be the ReLU's output. Out of place costs a new buffer per ReLU call
    (tens of ms a step on a CPU), so a forward pre-hook, which runs after smdebug's own (it
    advances the step), switches them only for the steps whose ReLU inputs are saved.
    Same values either way.
    """
    relus = [module for module in model.modules() if isinstance(module, nn.ReLU)]
    collection = hook.get_collection("relu_input")  # its save config is settled at the first step

    def switch(module: nn.Module, inputs: Any) -> None:
        saving = collection.save_config.should_save_step(hook.mode, hook.mode_steps[hook.mode])
        for relu in relus:
            relu.inplace = not saving

    model.register_forward_pre_hook(switch)


@contextlib.contextmanager
def _smdebug_log_level(level: str) -> Iterator[None]:
    """SMDEBUG_LOG_LEVEL=level for the block, unless it is set already."""
    if "SMDEBUG_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["SMDEBUG_LOG_LEVEL"] = level
    try:
        yield
    finally:
        del os.environ["SMDEBUG_LOG_LEVEL"]
