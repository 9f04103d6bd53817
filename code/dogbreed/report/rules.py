"""SageMaker Debugger's built-in rules, evaluated offline on a job's own smdebug trial.

smdebug ships the rule framework (``smdebug.rules.Rule``, ``invoke_rule``) but not the
built-in rules: those live in AWS's rule container. These are our implementations, under
SageMaker's rule names and with SageMaker's default parameters (the comment above each
``Params`` says where a default comes from: the SageMaker Debugger built-in rules
documentation, https://docs.aws.amazon.com/sagemaker/latest/dg/debugger-built-in-rules.html).
The semantics follow the documentation's descriptions and smdebug's first-party rules;
where the documentation leaves room, the rule's docstring says what we chose.

They read the trial :mod:`dogbreed.training.debugger` records (losses at every step,
reductions of gradients and ReLU inputs at some training steps), and any other smdebug
trial, raw tensors included. :func:`evaluate_rules` runs them once the job is over:
whatever the trial holds then is all there will be.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the duration of the block."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


# smdebug sets its logger's level from SMDEBUG_LOG_LEVEL once, at its first import, and
# logs at INFO to stdout by default; errors only, unless the variable says otherwise.
with _environ("SMDEBUG_LOG_LEVEL", os.environ.get("SMDEBUG_LOG_LEVEL", "error")):
    from smdebug.core.modes import ModeKeys
    from smdebug.core.utils import get_path_to_collections, list_collection_files_in_directory
    from smdebug.exceptions import RuleEvaluationConditionMet, ShapeUnavailableForStep, TensorUnavailableForStep
    from smdebug.rules import Rule, invoke_rule
    from smdebug.trials import create_trial

log = logging.getLogger(__name__)

# 5th to 95th percentile of a normal distribution, in standard deviations.
_NORMAL_P5_P95 = 2 * 1.6448536
# Reductions (name, of absolute values) that are NaN only when the tensor holds a NaN: an
# infinity alone makes them infinite. A NaN mean, std or variance may come from infinities.
_NAN_ONLY_FROM_NAN = {(name, absolute) for name in ("min", "max", "l1", "l2") for absolute in (False, True)} | {
    ("mean", True),
    ("sum", True),
}


class RuleStatus(Enum):
    """SageMaker's rule evaluation statuses, plus ours for a rule with nothing to look at."""

    ISSUES_FOUND = "IssuesFound"
    NO_ISSUES_FOUND = "NoIssuesFound"
    NOT_EVALUATED = "NotEvaluated"  # no data (or not enough) for the rule: never "no issues"


@dataclass
class RuleVerdict:
    """What one rule says about a trial."""

    name: str
    triggered: bool
    step: int | None  # the global step where the rule first fired
    message: str  # one readable line
    parameters: dict[str, Any]  # the parameters used
    evaluated: bool = True  # False: the rule had no (or not enough) data; see `message`

    @property
    def status(self) -> RuleStatus:
        if not self.evaluated:
            return RuleStatus.NOT_EVALUATED
        return RuleStatus.ISSUES_FOUND if self.triggered else RuleStatus.NO_ISSUES_FOUND


# --------------------------------------------------------------------------- reading a trial


@dataclass(frozen=True)
class LossPoint:
    """One saved value of a scalar tensor."""

    mode_step: int
    step: int  # global step
    value: float


@dataclass
class Phase:
    """A run of consecutive saved steps in one mode: an epoch's training, or an evaluation pass."""

    mode: str
    first_step: int
    last_step: int
    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


def as_list(value: str | list[str] | None) -> list[str]:
    """SageMaker's list parameters: a list of strings or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


def mode_key(name: str | None) -> ModeKeys | None:
    """``"TRAIN"`` (any case) as smdebug's mode; None stays None."""
    return None if name is None else ModeKeys[name.upper()]


def collection_tensors(trial: Any, collection: str) -> set[str]:
    """The saved tensors of a collection; none when the trial has no such collection."""
    if collection not in trial.collections():
        return set()
    return set(trial.tensor_names(collection=collection))


def regex_tensors(trial: Any, patterns: list[str]) -> set[str]:
    """The saved tensors whose names match any of the regular expressions (anywhere in the name)."""
    return set(trial.tensor_names(regex=patterns)) if patterns else set()


def loss_tensors(
    trial: Any, use_losses_collection: bool = True, collection_names: Any = None, tensor_regex: Any = None
) -> list[str]:
    """Scalar tensors named by SageMaker's loss parameters, sorted."""
    names = collection_tensors(trial, "losses") if use_losses_collection else set()
    for collection in as_list(collection_names):
        names |= collection_tensors(trial, collection)
    names |= regex_tensors(trial, as_list(tensor_regex))
    return sorted(name for name in names if _is_scalar(trial.tensor(name)))


def _is_scalar(tensor: Any) -> bool:
    """Whether the tensor's first saved value is a single number."""
    steps = tensor.steps()
    value = raw_value(tensor, steps[0]) if steps else None
    return value is not None and value.size == 1


def raw_value(tensor: Any, step: int) -> np.ndarray | None:
    """The tensor's full value at a global step; None where only reductions were saved."""
    try:
        return np.asarray(tensor.value(step))
    except TensorUnavailableForStep:
        return None


def reduction(tensor: Any, step: int, name: str, absolute: bool = False) -> float | None:
    """A reduction at a global step, saved or computed from the raw value; None if neither exists."""
    try:
        return float(tensor.reduction_value(step, name, abs=absolute))
    except TensorUnavailableForStep:
        return None


def loss_series(trial: Any, name: str, mode: ModeKeys) -> list[LossPoint]:
    """A scalar tensor's values in one mode, by mode step."""
    tensor = trial.tensor(name)
    points = []
    for mode_step in tensor.steps(mode=mode):
        step = mode_step if mode == ModeKeys.GLOBAL else trial.global_step(mode, mode_step)
        points.append(LossPoint(mode_step, step, float(np.mean(tensor.value(mode_step, mode=mode)))))
    return points


def loss_phases(trial: Any, name: str) -> list[Phase]:
    """A scalar tensor's values grouped into runs of one mode, in global step order."""
    tensor = trial.tensor(name)
    phases: list[Phase] = []
    for step in tensor.steps():
        mode = trial.mode(step).name
        if not phases or phases[-1].mode != mode:
            phases.append(Phase(mode, step, step))
        phases[-1].last_step = step
        phases[-1].values.append(float(np.mean(tensor.value(step))))
    return phases


def percent(fraction: float) -> str:
    """0.1 as "10%", 58.6 as "5860%", 2.3e8 as "2.3e+10%"."""
    value = 100 * fraction
    return f"{value:.0f}%" if 100 <= abs(value) < 1e6 else f"{value:.3g}%"


def tensors_at(trial: Any, step: int, names: set[str]) -> list[str]:
    """Which of ``names`` were saved at a global step, sorted."""
    return sorted(names.intersection(trial.tensor_names(step=step)))


# --------------------------------------------------------------------------- the rules


class BuiltInRule(Rule):
    """What our rules share: typed parameters, a count of checks, and the finding when fired.

    ``invoke_at_step`` returns True when the condition is met, having set ``finding``;
    ``smdebug.rules.Rule.invoke`` then raises ``RuleEvaluationConditionMet``.
    """

    @dataclass(frozen=True)
    class Params:
        pass

    params: Params

    def __init__(self, base_trial: Any, **parameters: Any):
        super().__init__(base_trial, action_str="")
        self.params = self.Params(**parameters)
        self.checked = 0  # comparisons made that could have fired
        self.finding = ""

    def fire(self, message: str) -> bool:
        self.finding = message
        return True

    def not_evaluated_reason(self) -> str:
        """Why the rule could not have fired on this trial; empty when it could."""
        return "" if self.checked else "no data for this rule in the trial"

    def summary(self) -> str:
        """The one line for a rule that did not fire."""
        return f"no issues in {self.checked} checks"


class VanishingGradient(BuiltInRule):
    """Fires when the mean of the absolute values of a gradient drops below ``threshold``.

    Every gradient tensor saved at a step is checked on its own (its abs mean reduction, or
    its raw value), as smdebug's first-party rule did. With ``skip_cancelled_biases`` (ours),
    a bias whose own layer's weight gradient is above the threshold at that step is passed
    over: a shift followed by a BatchNorm in training mode, directly or through a linear
    layer (a block's last BatchNorm before the head convolution in EfficientNet), is
    subtracted again with the batch mean, so its gradient is zero by construction.
    """

    @dataclass(frozen=True)
    class Params(BuiltInRule.Params):
        # Docs, VanishingGradient: threshold "Default value: 0.0000001".
        threshold: float = 0.0000001
        # Not SageMaker's: pass over biases whose layer's weights still learn; False is SageMaker's rule.
        skip_cancelled_biases: bool = False

    params: Params

    def __init__(self, base_trial: Any, **parameters: Any):
        super().__init__(base_trial, **parameters)
        self.gradients = collection_tensors(base_trial, "gradients")
        self.cancelled: set[str] = set()

    def invoke_at_step(self, step: int) -> bool:
        means = {}
        for name in tensors_at(self.base_trial, step, self.gradients):
            value = reduction(self.base_trial.tensor(name), step, "mean", absolute=True)
            if value is not None and not math.isnan(value):  # a NaN is ExplodingTensor's to report
                means[name] = value
        for name, value in means.items():
            self.checked += 1
            if value >= self.params.threshold:
                continue
            if (
                self.params.skip_cancelled_biases
                and name.endswith("bias")
                and means.get(name[: -len("bias")] + "weight", 0.0) >= self.params.threshold
            ):
                self.cancelled.add(name)
                continue
            return self.fire(f"{name} abs mean {value:.3g} < {self.params.threshold:g} at step {step}")
        return False

    def not_evaluated_reason(self) -> str:
        if self.checked:
            return ""
        return "no gradients in the trial (nothing trains, or the gradients collection was not saved)"

    def summary(self) -> str:
        summary = f"all {self.checked} gradient abs means >= {self.params.threshold:g}"
        if self.cancelled:
            count = len(self.cancelled)
            summary += (
                f", but for {count} bias{'es' if count > 1 else ''} that a BatchNorm cancels (their layers' "
                f"weights learn): {', '.join(sorted(self.cancelled)[:3])}"
            )
        return summary


class ExplodingTensor(BuiltInRule):
    """Fires when a tensor holds a NaN, or (unless ``only_nan``) an infinity.

    Without ``collection_names`` or ``tensor_regex`` every saved tensor is checked. Where
    only reductions were saved, a NaN or infinite reduction tells: a NaN min, max, norm, or
    mean or sum of absolute values means a NaN in the tensor; a NaN mean, std or variance
    may also come from infinities, so it counts only when ``only_nan`` is False.
    """

    @dataclass(frozen=True)
    class Params(BuiltInRule.Params):
        # Docs, ExplodingTensor: collection_names and tensor_regex "Default value: None" (all
        # tensors); only_nan "Valid values: False" (NaN and infinity both count).
        collection_names: str | list[str] | None = None
        tensor_regex: str | list[str] | None = None
        only_nan: bool = False

    params: Params

    def __init__(self, base_trial: Any, **parameters: Any):
        super().__init__(base_trial, **parameters)
        self.tensors = regex_tensors(base_trial, as_list(self.params.tensor_regex))
        for collection in as_list(self.params.collection_names):
            self.tensors |= collection_tensors(base_trial, collection)
        if not self.params.collection_names and not self.params.tensor_regex:
            self.tensors = set(base_trial.tensor_names())

    def invoke_at_step(self, step: int) -> bool:
        for name in tensors_at(self.base_trial, step, self.tensors):
            problem = self.non_finite(self.base_trial.tensor(name), step)
            self.checked += 1
            if problem:
                return self.fire(f"{name} holds {problem} at step {step}")
        return False

    def non_finite(self, tensor: Any, step: int) -> str:
        """ "NaN", "inf", "NaN or inf", or "" for a finite tensor (as far as its data tell)."""
        value = raw_value(tensor, step)
        if value is not None:
            if np.isnan(value).any():
                return "NaN"
            return "inf" if not self.params.only_nan and np.isinf(value).any() else ""
        found = ""
        for (name, absolute), reduced in tensor.reduction_values(step).items():
            reduced = float(reduced)
            if math.isnan(reduced) and (name, absolute) in _NAN_ONLY_FROM_NAN:
                return "NaN"
            if math.isnan(reduced) and not self.params.only_nan:
                found = "NaN or inf"
            elif math.isinf(reduced) and not self.params.only_nan:
                found = found or "inf"
        return found

    def not_evaluated_reason(self) -> str:
        return "" if self.checked else "no tensors to check in the trial"

    def summary(self) -> str:
        kind = "NaN" if self.params.only_nan else "NaN or infinity"
        return f"no {kind} in {self.checked} saved tensor values"


@dataclass(frozen=True)
class LossWindow:
    """The mean of a loss over mode steps ``first``..``last``."""

    first: int
    last: int
    mean: float

    @property
    def steps(self) -> str:
        return f"step {self.last}" if self.first == self.last else f"steps {self.first}-{self.last}"


@dataclass(frozen=True)
class WindowCheck:
    """One LossNotDecreasing comparison: a loss's current window against the previous one."""

    name: str
    step: int  # global step of the window's last value
    current: LossWindow
    previous: LossWindow


def window_checks(name: str, series: list[LossPoint], num_steps: int) -> list[WindowCheck]:
    """LossNotDecreasing's comparisons: every ``num_steps``, against the latest point ``num_steps`` back.

    Each side is the mean over the ``num_steps`` steps that end there (a single value where
    losses are saved every ``num_steps`` or less often): every step's batch loss is saved
    here, and one batch against another is mostly noise.
    """

    def window(last: int) -> LossWindow:
        values = [p.value for p in series if last - num_steps < p.mode_step <= last]
        first = min(p.mode_step for p in series if last - num_steps < p.mode_step <= last)
        return LossWindow(first, last, float(np.mean(values)))

    checks, due = [], series[0].mode_step + num_steps if series else 0
    for point in series:
        if point.mode_step < due:
            continue
        previous = max(p.mode_step for p in series if p.mode_step <= point.mode_step - num_steps)
        checks.append(WindowCheck(name, point.step, window(point.mode_step), window(previous)))
        due = point.mode_step + num_steps
    return checks


class LossNotDecreasing(BuiltInRule):
    """Fires when a loss does not decrease at an adequate rate.

    Every ``num_steps`` steps of ``mode``, the mean loss of the last ``num_steps`` steps is
    compared with that of the ``num_steps`` steps before (see :func:`window_checks`). It
    fires when it is not ``diff_percent`` percent lower, when it is more than
    ``increase_threshold_percent`` percent above the lowest mean so far, or when it is not
    finite, for ``patience`` comparisons in a row (ours; 1 is SageMaker's rule). Losses are
    taken to be positive.
    """

    @dataclass(frozen=True)
    class Params(BuiltInRule.Params):
        # Docs, LossNotDecreasing: collection_names and tensor_regex "Default value: None";
        # use_losses_collection True; num_steps 10; mode None: EVAL, then TRAIN, then GLOBAL, the
        # first with losses. diff_percent 0.1 and increase_threshold_percent 5 from the current page;
        # the guide's 2023 copy (github.com/awsdocs/amazon-sagemaker-developer-guide) had no
        # increase_threshold_percent and diff_percent "checks if the loss is decreasing" (0).
        collection_names: str | list[str] | None = None
        tensor_regex: str | list[str] | None = None
        use_losses_collection: bool = True
        num_steps: int = 10
        diff_percent: float = 0.1
        increase_threshold_percent: float = 5.0
        mode: str | None = None
        # Not SageMaker's: comparisons in a row that must fail; 1 is SageMaker's rule.
        patience: int = 1

    params: Params

    def __init__(self, base_trial: Any, **parameters: Any):
        super().__init__(base_trial, **parameters)
        p = self.params
        self.losses = loss_tensors(base_trial, p.use_losses_collection, p.collection_names, p.tensor_regex)
        self.mode = mode_key(p.mode) or self._first_mode_with_losses()
        self.checks: dict[int, list[WindowCheck]] = defaultdict(list)
        for name in self.losses:
            for check in window_checks(name, loss_series(base_trial, name, self.mode), p.num_steps):
                self.checks[check.step].append(check)
        self.lowest: dict[str, float] = {}
        self.failed: dict[str, list[str]] = defaultdict(list)  # the findings of the latest failed comparisons

    def _first_mode_with_losses(self) -> ModeKeys:
        for mode in (ModeKeys.EVAL, ModeKeys.TRAIN):
            if any(self.base_trial.tensor(name).steps(mode=mode) for name in self.losses):
                return mode
        return ModeKeys.GLOBAL

    def invoke_at_step(self, step: int) -> bool:
        return any(self.compare(check) for check in self.checks.get(step, []))

    def compare(self, check: WindowCheck) -> bool:
        """One comparison; True (with a finding) when the loss has not been decreasing for ``patience`` in a row."""
        self.checked += 1
        if not math.isfinite(check.current.mean):  # never waits for patience
            return self.fire(
                f"{check.name} ({self.mode.name} {check.current.steps}) is {check.current.mean} at step {check.step}"
            )
        finding = self.finding_of(check)
        failed = self.failed[check.name]
        if not finding:
            failed.clear()
            return False
        failed.append(finding)
        if len(failed) < self.params.patience:
            return False
        more = f" ({len(failed)} comparisons in a row)" if self.params.patience > 1 else ""
        return self.fire(finding + more)

    def finding_of(self, check: WindowCheck) -> str:
        """What is wrong with a finite window, or ""."""
        p, cur, prev = self.params, check.current, check.previous
        where = f"{check.name} ({self.mode.name} {cur.steps})"
        lowest = min(self.lowest.get(check.name, prev.mean), prev.mean)
        self.lowest[check.name] = min(lowest, cur.mean)
        if cur.mean > lowest * (1 + p.increase_threshold_percent / 100):
            return (
                f"{where} averaged {cur.mean:.4g}, {percent(cur.mean / lowest - 1)} above its lowest"
                f" {lowest:.4g} (> {p.increase_threshold_percent:g}%) at step {check.step}"
            )
        if cur.mean > prev.mean * (1 - p.diff_percent / 100):
            return (
                f"{where} averaged {cur.mean:.4g} against {prev.mean:.4g} at {prev.steps}:"
                f" not {p.diff_percent:g}% lower at step {check.step}"
            )
        return ""

    def not_evaluated_reason(self) -> str:
        if not self.losses:
            return "no scalar loss tensors in the trial"
        if not self.checked:
            return f"fewer than {self.params.num_steps + 1} {self.mode.name} steps of loss in the trial"
        return ""

    def summary(self) -> str:
        p = self.params
        if p.patience > 1:
            return (
                f"{self.mode.name} loss never stalled for {p.patience} windows of {p.num_steps} steps in a row"
                f" ({self.checked} checks)"
            )
        return (
            f"{self.mode.name} loss fell by at least {p.diff_percent:g}% every {p.num_steps} steps"
            f" ({self.checked} checks)"
        )


def train_eval_pairs(phases: list[Phase]) -> list[tuple[Phase, Phase]]:
    """Each evaluation pass with the training phase just before it."""
    return [(a, b) for a, b in itertools.pairwise(phases) if a.mode == "TRAIN" and b.mode == "EVAL"]


class Overfit(BuiltInRule):
    """Fires when the validation loss exceeds the training loss by more than ``ratio_threshold``.

    One comparison per evaluation pass: the pass's mean loss against the mean loss of the
    training steps just before it (an epoch), ``(validation - training) / training``. It
    fires when that exceeds ``ratio_threshold`` for ``patience`` passes in a row, counting
    passes that end at ``start_step`` or later, and where the validation loss is also at
    least ``min_gap`` above the training loss (ours: near zero, a ratio means nothing).
    """

    @dataclass(frozen=True)
    class Params(BuiltInRule.Params):
        # Docs, Overfit: tensor_regex "Default value: None"; start_step 0; patience 1; ratio_threshold 0.1.
        tensor_regex: str | list[str] | None = None
        start_step: int = 0
        patience: int = 1
        ratio_threshold: float = 0.1
        # Not SageMaker's: the smallest absolute gap (in loss units) that counts; 0 is SageMaker's rule.
        min_gap: float = 0.0

    params: Params

    def __init__(self, base_trial: Any, **parameters: Any):
        super().__init__(base_trial, **parameters)
        regex = self.params.tensor_regex
        self.losses = loss_tensors(base_trial, use_losses_collection=not regex, tensor_regex=regex)
        self.pairs: dict[int, list[tuple[str, Phase, Phase]]] = defaultdict(list)
        for name in self.losses:
            for train, valid in train_eval_pairs(loss_phases(base_trial, name)):
                self.pairs[valid.last_step].append((name, train, valid))
        self.exceeded: dict[str, int] = defaultdict(int)
        self.unusable = 0  # passes whose losses are not finite, or whose training loss is not positive

    def invoke_at_step(self, step: int) -> bool:
        if step < self.params.start_step:
            return False
        return any(self.compare(name, train, valid) for name, train, valid in self.pairs.get(step, []))

    def compare(self, name: str, train: Phase, valid: Phase) -> bool:
        if not (math.isfinite(valid.mean) and math.isfinite(train.mean) and train.mean > 0):
            self.unusable += 1
            return False
        self.checked += 1
        ratio = (valid.mean - train.mean) / train.mean
        over = ratio > self.params.ratio_threshold and valid.mean - train.mean >= self.params.min_gap
        self.exceeded[name] = self.exceeded[name] + 1 if over else 0
        if self.exceeded[name] >= self.params.patience:
            return self.fire(
                f"{name}: validation loss {valid.mean:.4g} is {percent(ratio)} above training loss"
                f" {train.mean:.4g} (> {percent(self.params.ratio_threshold)}) at step {valid.last_step}"
            )
        return False

    def not_evaluated_reason(self) -> str:
        if self.checked:
            return ""
        if self.unusable:
            return f"the losses around all {self.unusable} evaluation passes are not finite (or not positive)"
        return "no evaluation pass after training steps in the trial"

    def summary(self) -> str:
        return f"validation loss within {percent(self.params.ratio_threshold)} of training loss ({self.checked} passes)"


@dataclass
class Plateau:
    """The best loss so far, and for how many phases it has not improved by ``delta``."""

    delta: float
    best: float | None = None
    since: int = 0
    phases: int = 0

    def update(self, loss: float) -> None:
        self.phases += 1
        if self.best is None or loss < self.best - self.delta:
            self.best, self.since = loss, 0
        else:
            self.since += 1


class Overtraining(BuiltInRule):
    """Fires when the training loss has stopped improving for ``patience_train`` phases, or the
    validation loss for ``patience_validation`` passes.

    A "step" of this rule is a training phase (the training steps between two evaluations,
    an epoch) or an evaluation pass, each taken as its mean loss: the trial holds every
    batch's loss, and a best-batch-so-far test would fire on noise. A loss improves when it
    drops below the best so far by more than ``delta``.
    """

    @dataclass(frozen=True)
    class Params(BuiltInRule.Params):
        # Docs, Overtraining: patience_train 5; patience_validation 10; delta 0.01 from the current
        # page (the guide's 2023 copy on GitHub had 0.1).
        patience_train: int = 5
        patience_validation: int = 10
        delta: float = 0.01

    params: Params

    def __init__(self, base_trial: Any, **parameters: Any):
        super().__init__(base_trial, **parameters)
        self.losses = loss_tensors(base_trial)
        self.ends: dict[int, list[tuple[str, Phase]]] = defaultdict(list)
        for name in self.losses:
            for phase in loss_phases(base_trial, name):
                if phase.mode in ("TRAIN", "EVAL"):
                    self.ends[phase.last_step].append((name, phase))
        self.plateaus: dict[tuple[str, str], Plateau] = {}

    def invoke_at_step(self, step: int) -> bool:
        return any(self.update(name, phase) for name, phase in self.ends.get(step, []))

    def update(self, name: str, phase: Phase) -> bool:
        plateau = self.plateaus.setdefault((name, phase.mode), Plateau(self.params.delta))
        plateau.update(phase.mean)
        patience = self.params.patience_train if phase.mode == "TRAIN" else self.params.patience_validation
        if plateau.phases > patience:
            self.checked += 1
        if plateau.since >= patience:
            what = "training loss" if phase.mode == "TRAIN" else "validation loss"
            unit = "training phases" if phase.mode == "TRAIN" else "evaluation passes"
            return self.fire(
                f"{name}: {what} has not improved by {self.params.delta:g} on its best"
                f" {plateau.best:.4g} for {plateau.since} {unit} at step {phase.last_step}"
            )
        return False

    def not_evaluated_reason(self) -> str:
        if self.checked:
            return ""
        counts = {
            mode: max((p.phases for (_, m), p in self.plateaus.items() if m == mode), default=0)
            for mode in ("TRAIN", "EVAL")
        }
        return (
            f"needs more than {self.params.patience_train} training phases or"
            f" {self.params.patience_validation} evaluation passes; the trial has"
            f" {counts['TRAIN']} and {counts['EVAL']}"
        )

    def summary(self) -> str:
        return "training and validation losses kept improving"


@dataclass
class EarlyChecks:
    """How many of PoorWeightInitialization's three checks had data."""

    activations: int = 0
    gradients: int = 0
    losses: int = 0


class PoorWeightInitialization(BuiltInRule):
    """Fires when the first ``steps`` training steps show a poorly initialised network.

    At each of those steps: the variances of the activation inputs must not differ by more
    than a factor ``threshold`` across layers; the gradients' 5th-to-95th percentile range
    must be at least ``distribution_range``; and the loss must reach a new low at least
    every ``patience`` steps. The percentile range comes from the raw gradients when they
    were saved; from reductions, it is estimated as that of a normal distribution with the
    gradients' pooled standard deviation (their std reductions weighted by their sizes).
    """

    @dataclass(frozen=True)
    class Params(BuiltInRule.Params):
        # Docs, PoorWeightInitialization: activation_inputs_regex ".*relu_input"; threshold 10.0;
        # distribution_range 0.001; patience 5; steps 10.
        activation_inputs_regex: str = ".*relu_input"
        threshold: float = 10.0
        distribution_range: float = 0.001
        patience: int = 5
        steps: int = 10

    params: Params

    def __init__(self, base_trial: Any, **parameters: Any):
        super().__init__(base_trial, **parameters)
        trial = base_trial
        mode = ModeKeys.TRAIN if trial.steps(mode=ModeKeys.TRAIN) else ModeKeys.GLOBAL
        self.early = {
            trial.global_step(mode, s) if mode != ModeKeys.GLOBAL else s
            for s in trial.steps(mode=mode)[: self.params.steps]
        }
        self.activations = regex_tensors(trial, as_list(self.params.activation_inputs_regex))
        self.gradients = collection_tensors(trial, "gradients")
        self.losses = loss_tensors(trial)
        self.counts = EarlyChecks()
        self.loss_plateaus: dict[str, Plateau] = {}

    def invoke_at_step(self, step: int) -> bool:
        if step not in self.early:
            return False
        return self.check_activations(step) or self.check_gradients(step) or self.check_losses(step)

    def check_activations(self, step: int) -> bool:
        variances = {}
        for name in tensors_at(self.base_trial, step, self.activations):
            value = reduction(self.base_trial.tensor(name), step, "variance")
            if value is not None and math.isfinite(value):
                variances[name] = value
        if len(variances) < 2:
            return False
        self.counts.activations += 1
        low, high = min(variances, key=lambda n: variances[n]), max(variances, key=lambda n: variances[n])
        if variances[high] == 0:
            return self.fire(f"all {len(variances)} activation inputs are constant at step {step}")
        ratio = variances[high] / variances[low] if variances[low] else math.inf
        if ratio > self.params.threshold:
            return self.fire(
                f"activation input variances differ {ratio:.3g}x (> {self.params.threshold:g}):"
                f" {high} {variances[high]:.3g}, {low} {variances[low]:.3g} at step {step}"
            )
        return False

    def check_gradients(self, step: int) -> bool:
        spread = gradient_spread(self.base_trial, tensors_at(self.base_trial, step, self.gradients), step)
        if spread is None:
            return False
        self.counts.gradients += 1
        if spread < self.params.distribution_range:
            return self.fire(
                f"gradients' 5th-95th percentile range {spread:.3g} < {self.params.distribution_range:g} at step {step}"
            )
        return False

    def check_losses(self, step: int) -> bool:
        for name in tensors_at(self.base_trial, step, set(self.losses)):
            value = float(np.mean(self.base_trial.tensor(name).value(step)))  # a loss is saved whole
            plateau = self.loss_plateaus.setdefault(name, Plateau(delta=0.0))
            plateau.update(value)
            self.counts.losses += 1
            if plateau.since >= self.params.patience:
                return self.fire(
                    f"{name} has not reached a new low for {plateau.since} steps"
                    f" (best {plateau.best:.4g}) at step {step}"
                )
        return False

    def not_evaluated_reason(self) -> str:
        if self.counts.activations or self.counts.gradients or self.counts.losses:
            return ""
        return f"no activation inputs, gradients or losses in the first {self.params.steps} steps"

    def summary(self) -> str:
        c = self.counts
        return (
            f"first {self.params.steps} steps look fine: activation variances ({c.activations} steps),"
            f" gradient spread ({c.gradients}), loss ({c.losses})"
        )


def gradient_spread(trial: Any, names: list[str], step: int) -> float | None:
    """The 5th-to-95th percentile range of all the gradients at a step (see PoorWeightInitialization)."""
    if not names:
        return None
    tensors = [trial.tensor(name) for name in names]
    raws = [raw_value(t, step) for t in tensors]
    whole = [r for r in raws if r is not None]
    if len(whole) == len(raws):
        values = np.concatenate([r.ravel() for r in whole])
        values = values[:: max(1, values.size // 1_000_000)]  # a sample is plenty for two percentiles
        low, high = np.percentile(values, [5, 95])
        return float(high - low) if math.isfinite(high - low) else None
    sizes, variances = [], []
    for tensor in tensors:
        std, size = reduction(tensor, step, "std"), tensor_size(tensor, step)
        if std is not None and math.isfinite(std) and size:
            sizes.append(size)
            variances.append(std**2)
    if not sizes:
        return None
    return _NORMAL_P5_P95 * math.sqrt(float(np.average(variances, weights=sizes)))


def tensor_size(tensor: Any, step: int) -> int | None:
    """How many values the tensor has at a step (the hook saves shapes with reductions); None if unknown."""
    try:
        return math.prod(tensor.shape(step))
    except ShapeUnavailableForStep:
        return None


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class RuleSpec:
    """A rule as :func:`evaluate_rules` runs it: its class and the parameters that differ from SageMaker's."""

    rule: type[BuiltInRule]
    overrides: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        return asdict(self.rule.Params(**self.overrides))


# The rules exactly as SageMaker runs them by default.
SAGEMAKER_RULES = (
    RuleSpec(VanishingGradient),
    RuleSpec(ExplodingTensor),
    RuleSpec(LossNotDecreasing),
    RuleSpec(Overfit),
    RuleSpec(Overtraining),
    RuleSpec(PoorWeightInitialization),
)
RULE_NAMES = tuple(spec.rule.__name__ for spec in SAGEMAKER_RULES)
# Overfit's absolute gap: 0.1 nats is about a tenth less probability on the true class.
OVERFIT_MIN_GAP = 0.1


@dataclass(frozen=True)
class JobFacts:
    """What the job's record (metrics.json's hyperparameters) says that changes what a finding means."""

    pretrained: bool = False  # the network started from trained weights, not a random initialisation
    patience: int = 3  # early stopping's: epochs without progress the job itself tolerates

    @classmethod
    def from_hyperparameters(cls, hyperparameters: dict[str, Any]) -> JobFacts:
        patience = int(hyperparameters.get("patience", 3) or 3)  # 0 (never stop early): the default's 3
        return cls(pretrained=str(hyperparameters.get("pretrained", "none")) != "none", patience=patience)


def job_rules(trial: Any, facts: JobFacts) -> tuple[RuleSpec, ...]:
    """The rules as the report runs them: SageMaker's, with four changes for what our trial holds.

    Every batch's loss is saved, so LossNotDecreasing compares windows as long as an epoch
    (the mean loss of an epoch's worth of training steps against the one before; with a
    single epoch, SageMaker's 10 steps) rather than 10 noisy batch losses, and reads the
    training loss: the evaluation steps are batches of one fixed model, whose trend means
    nothing. A converged head's epoch losses go up and down a little, so it fires when
    the loss has not decreased for as many epochs in a row as the job's early stopping
    waits (``patience``): what the job itself counts as no progress. Overfit also needs an
    absolute gap (:data:`OVERFIT_MIN_GAP`): 0.01 against 0.002 is "400% above" and no
    overfitting. VanishingGradient passes over biases that a following BatchNorm cancels.
    """
    specs = {spec.rule: spec for spec in SAGEMAKER_RULES}
    epoch = steps_per_epoch(trial)
    by_epoch = {"num_steps": epoch, "patience": facts.patience} if epoch else {}
    specs[LossNotDecreasing] = RuleSpec(LossNotDecreasing, {"mode": "TRAIN", **by_epoch})
    specs[Overfit] = RuleSpec(Overfit, {"min_gap": OVERFIT_MIN_GAP})
    specs[VanishingGradient] = RuleSpec(VanishingGradient, {"skip_cancelled_biases": True})
    return tuple(specs.values())


def steps_per_epoch(trial: Any) -> int | None:
    """Training steps in the trial's first training phase (an epoch); None unless there are two
    epochs to compare (then SageMaker's windows of 10 steps are all there is)."""
    for name in loss_tensors(trial):
        epochs = [len(phase.values) for phase in loss_phases(trial, name) if phase.mode == "TRAIN"]
        if len(epochs) >= 2:
            return epochs[0]
    return None


class TrialUnavailable(Exception):
    """The trial directory holds nothing the rules can read."""


def evaluate_rules(
    trial_path: str | Path, facts: JobFacts = JobFacts(), sagemaker_defaults: bool = False
) -> list[RuleVerdict]:
    """One verdict per rule, in :data:`RULE_NAMES` order; never raises for a bad trial.

    By default the rules run as :func:`job_rules` says, and PoorWeightInitialization is
    not applied to a network that starts from pretrained weights (``facts``): it judges a
    random initialisation. ``sagemaker_defaults`` runs every rule as SageMaker does.
    """
    with _quiet_smdebug():
        try:
            trial = open_trial(Path(trial_path))
        except Exception as exc:  # noqa: BLE001 - a broken trial is a verdict, not a crash
            reason = str(exc) if isinstance(exc, TrialUnavailable) else f"the trial could not be read: {exc!r}"
            log.warning("smdebug trial %s: %s", trial_path, reason)
            return [_not_evaluated(spec, reason) for spec in SAGEMAKER_RULES]
        specs = SAGEMAKER_RULES if sagemaker_defaults else job_rules(trial, facts)
        return [
            _pretrained_verdict(spec)
            if facts.pretrained and not sagemaker_defaults and spec.rule is PoorWeightInitialization
            else run_rule(spec, trial)
            for spec in specs
        ]


def _pretrained_verdict(spec: RuleSpec) -> RuleVerdict:
    return _not_evaluated(
        spec,
        "not applied: the network starts from pretrained weights, and this rule judges a "
        "random initialisation (python -m dogbreed.report --sagemaker-defaults applies it)",
    )


def open_trial(path: Path) -> Any:
    """The trial in ``path``, taken as complete: the job that wrote it is over."""
    if not path.is_dir():
        raise TrialUnavailable(f"no smdebug trial at {path}")
    # Without a collections file smdebug's trial waits for one (forever, if no end-of-job file).
    if not list_collection_files_in_directory(get_path_to_collections(str(path))):
        raise TrialUnavailable(f"no smdebug collections file in {path}: the hook saved nothing")
    trial = create_trial(str(path))
    steps = trial.steps(show_incomplete_steps=True)
    if not steps:
        raise TrialUnavailable(f"the smdebug trial in {path} has no steps")
    # smdebug expects a running job: a step some worker has not written yet, or a step past
    # the last one without an end-of-job file (a killed job), is polled for every 2 seconds.
    trial.loaded_all_steps = True
    trial.last_complete_step = steps[-1]
    return trial


def run_rule(spec: RuleSpec, trial: Any) -> RuleVerdict:
    """Invoke one rule over all the trial's steps, as SageMaker's rule container does."""
    try:
        rule = spec.rule(trial, **spec.overrides)
        steps = trial.steps()
        invoke_rule(rule, start_step=steps[0], end_step=steps[-1] + 1, raise_eval_cond=True)
    except RuleEvaluationConditionMet as met:
        return RuleVerdict(spec.rule.__name__, True, met.step, rule.finding, spec.parameters())
    except Exception as exc:
        log.warning("rule %s could not be evaluated", spec.rule.__name__, exc_info=True)
        return _not_evaluated(spec, f"could not be evaluated: {exc!r}")
    reason = rule.not_evaluated_reason()
    if reason:
        return _not_evaluated(spec, reason)
    return RuleVerdict(spec.rule.__name__, False, None, rule.summary(), spec.parameters())


def _not_evaluated(spec: RuleSpec, reason: str) -> RuleVerdict:
    return RuleVerdict(spec.rule.__name__, False, None, reason, spec.parameters(), evaluated=False)


@contextlib.contextmanager
def _quiet_smdebug() -> Iterator[None]:
    """smdebug's INFO lines off (unless SMDEBUG_LOG_LEVEL says), and no 1 s pause on an ended trial."""
    logger = logging.getLogger("smdebug")
    level = logger.level
    if "SMDEBUG_LOG_LEVEL" not in os.environ:
        logger.setLevel(logging.ERROR)
    try:
        with _environ("SMDEBUG_TRAINING_END_DELAY_REFRESH", "0"):
            yield
    finally:
        logger.setLevel(level)
