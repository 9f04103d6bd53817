"""Bottleneck verdicts over a job's recorded profile, in the manner of SageMaker's ProfilerReport.

Each check but ``DataWait`` follows one of SageMaker Debugger's built-in profiler rules with
that rule's default parameters, as documented in "List of Debugger built-in profiler rules"
(https://docs.aws.amazon.com/sagemaker/latest/dg/debugger-built-in-profiler-rules.html) and
the SageMaker Python SDK's ``rule_configs``; the numbers are in the ``*Rule`` dataclasses
below. They are judged over the profile the job recorded (:mod:`dogbreed.profile_format`). A check whose
data is missing (the GPU rules in a CPU job) comes back with ``evaluated=False`` saying why.

Short jobs. SageMaker samples system metrics every 500 ms, and its rules count samples:
``patience=1000`` skips the first ~8 minutes of a job and ``window=500`` judges ~4 minutes at
a time, against jobs that run for hours. A local or short job has a few hundred samples in
all, so both shrink with the job (:func:`scaled_patience`, :func:`scaled_window`): patience
to a tenth of the samples, a window to a quarter of what is judged; SageMaker's values are
the ceiling, so a long job is judged as SageMaker would judge it. StepOutlier's allowance
shrinks the same way (:func:`allowed_outliers`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from dogbreed.profile_format import Profile, StepTiming, SystemSample

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_SAMPLES = 20  # system samples left after patience (10 s at 2 Hz) below which a rule does not judge
MIN_STEPS = 10  # steps of a mode below which the step checks do not judge
NO_GPU = "no GPU in this job"


@dataclass
class BottleneckVerdict:
    """One check's outcome: ``finding`` states the numbers, ``advice`` what to change when it fired."""

    name: str
    triggered: bool
    evaluated: bool
    finding: str
    advice: str = ""


# Default parameters: each as SageMaker documents for the rule of the same name.


@dataclass(frozen=True)
class CPUBottleneckRule:
    """A sample is a CPU bottleneck when the CPUs are busy and the GPU is idle; fires above ``threshold`` % of them."""

    threshold: float = 50.0
    gpu_threshold: float = 10.0
    cpu_threshold: float = 90.0
    patience: int = 1000


@dataclass(frozen=True)
class IOBottleneckRule:
    """A sample is an I/O bottleneck when the CPUs wait on I/O and the GPU is idle; fires above ``threshold`` %."""

    threshold: float = 50.0
    gpu_threshold: float = 10.0
    io_threshold: float = 50.0
    patience: int = 1000


@dataclass(frozen=True)
class LowGPUUtilizationRule:
    """Fires when a window's p95 GPU utilisation is low (under-used), or its p95 high but p5 low (fluctuating)."""

    threshold_p95: float = 70.0
    threshold_p5: float = 10.0
    window: int = 500
    patience: int = 1000


@dataclass(frozen=True)
class BatchSizeRule:
    """Fires when a window's p95 CPU, GPU and GPU memory utilisation are all low: the batch could be larger."""

    cpu_threshold_p95: float = 70.0
    gpu_threshold_p95: float = 70.0
    gpu_memory_threshold_p95: float = 70.0
    patience: int = 1000
    window: int = 500


@dataclass(frozen=True)
class DataloaderRule:
    """Loader workers as a percentage of the cores: fewer than ``min_threshold`` or more than ``max_threshold``.

    SageMaker counts the loader processes it sees running; we know ``num_workers`` and the
    cores from the profile's metadata. Adapted: too few workers fire only when training also
    waits for data (DataWait's threshold) or when no step timings were recorded, because
    SageMaker's 70% would otherwise fail every job whose loader easily keeps up.
    """

    min_threshold: float = 70.0
    max_threshold: float = 200.0


@dataclass(frozen=True)
class StepOutlierRule:
    """Steps longer than the mean plus ``stddev`` standard deviations; fires above ``n_outliers`` of them.

    ``mode`` None judges train and eval steps separately (their durations differ), as
    SageMaker's default judges both.
    """

    stddev: float = 3.0
    mode: str | None = None
    n_outliers: int = 10


@dataclass(frozen=True)
class DataWaitRule:
    """Ours: fires when training waits for the loader more than ``threshold`` % of its step time.

    20%: a fifth of every step with the GPU (or CPU) idle is worth a change of num_workers;
    below that, more workers buy little and cost memory.
    """

    threshold: float = 20.0


@dataclass(frozen=True)
class Rules:
    """Every check's parameters; the defaults are SageMaker's (DataWait's are ours)."""

    cpu_bottleneck: CPUBottleneckRule = field(default_factory=CPUBottleneckRule)
    io_bottleneck: IOBottleneckRule = field(default_factory=IOBottleneckRule)
    low_gpu_utilization: LowGPUUtilizationRule = field(default_factory=LowGPUUtilizationRule)
    batch_size: BatchSizeRule = field(default_factory=BatchSizeRule)
    dataloader: DataloaderRule = field(default_factory=DataloaderRule)
    data_wait: DataWaitRule = field(default_factory=DataWaitRule)
    step_outlier: StepOutlierRule = field(default_factory=StepOutlierRule)


# --- scaling SageMaker's sample counts to short jobs ---------------------------------


def scaled_patience(patience: int, samples: int) -> int:
    """Samples to skip at the start: SageMaker's ``patience``, or a tenth of the job's samples if less."""
    return min(patience, samples // 10)


def scaled_window(window: int, samples: int) -> int:
    """Samples per window: SageMaker's ``window``, or a quarter of those judged if less, at least MIN_SAMPLES."""
    return max(MIN_SAMPLES, min(window, samples // 4))


def allowed_outliers(n_outliers: int, steps: int) -> int:
    """Outliers tolerated: SageMaker's 10 assume thousands of steps; we allow one per 100 steps, 1 to 10."""
    return min(n_outliers, max(1, math.ceil(steps / 100)))


def windows(values: Sequence[T], window: int) -> list[Sequence[T]]:
    """Consecutive windows of ``window`` values; a shorter tail is judged as the last ``window`` values."""
    if len(values) <= window:
        return [values]
    chunks = [values[i : i + window] for i in range(0, len(values) - window + 1, window)]
    if len(values) % window:
        chunks.append(values[-window:])
    return chunks


def _p(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def _not_evaluated(name: str, reason: str) -> BottleneckVerdict:
    return BottleneckVerdict(name, triggered=False, evaluated=False, finding=reason)


def _gpu_samples(
    profile: Profile, has_gpu: bool, patience: int, keep: Callable[[SystemSample], bool] = lambda s: True
) -> tuple[list[SystemSample], int, str | None]:
    """The GPU samples to judge (after patience), how many were skipped, or why there are none to judge."""
    if not has_gpu:
        return [], 0, NO_GPU
    samples = [s for s in profile.samples if s.gpu_percent is not None and keep(s)]
    if not samples:
        return [], 0, "GPU utilisation was not recorded (torch.cuda.utilization needs pynvml)"
    skipped = scaled_patience(patience, len(samples))
    judged = samples[skipped:]
    if len(judged) < MIN_SAMPLES:
        return [], skipped, f"only {len(judged)} GPU samples after the first {skipped}: too few to judge"
    return judged, skipped, None


def _known(value: float | None) -> float:
    """A judged sample's reading: _gpu_samples keeps only the samples that hold it."""
    assert value is not None, "a judged sample lacks a reading _gpu_samples filtered on"
    return value


def _batch_size_now(profile: Profile) -> str:
    return f" (now {profile.metadata.batch_size})" if profile.metadata else ""


def _workers_now(profile: Profile) -> str:
    metadata = profile.metadata
    return f" (now {metadata.num_workers} for {metadata.cores} cores)" if metadata else ""


# --- the checks ----------------------------------------------------------------------


def cpu_bottleneck(profile: Profile, has_gpu: bool, rule: CPUBottleneckRule) -> BottleneckVerdict:
    """SageMaker CPUBottleneck: busy CPUs (all cores' mean) while the GPU idles."""
    name = "CPUBottleneck"
    judged, skipped, reason = _gpu_samples(profile, has_gpu, rule.patience)
    if reason:
        return _not_evaluated(name, reason)
    hits = sum(1 for s in judged if s.cpu_mean > rule.cpu_threshold and _known(s.gpu_percent) < rule.gpu_threshold)
    share = 100.0 * hits / len(judged)
    triggered = share > rule.threshold
    finding = (
        f"CPU above {rule.cpu_threshold:g}% while the GPU was below {rule.gpu_threshold:g}% in {share:.0f}% "
        f"of {len(judged)} samples (fires above {rule.threshold:g}%; first {skipped} samples skipped)"
    )
    advice = (
        (
            "the CPUs cannot feed the GPU: do less per image on the CPU (pre-resized images, lighter augmentation)"
            " or pick an instance with more cores per GPU"
        )
        if triggered
        else ""
    )
    return BottleneckVerdict(name, triggered, True, finding, advice)


def io_bottleneck(profile: Profile, has_gpu: bool, rule: IOBottleneckRule) -> BottleneckVerdict:
    """SageMaker IOBottleneck: CPUs waiting on I/O while the GPU idles."""
    name = "IOBottleneck"
    gpu = [s for s in profile.samples if s.gpu_percent is not None]
    if has_gpu and gpu and all(s.cpu_iowait_percent is None for s in gpu):
        return _not_evaluated(name, "I/O wait was not recorded (psutil reports it on Linux only)")
    judged, skipped, reason = _gpu_samples(profile, has_gpu, rule.patience, lambda s: s.cpu_iowait_percent is not None)
    if reason:
        return _not_evaluated(name, reason)
    hits = sum(
        1
        for s in judged
        if _known(s.cpu_iowait_percent) > rule.io_threshold and _known(s.gpu_percent) < rule.gpu_threshold
    )
    share = 100.0 * hits / len(judged)
    triggered = share > rule.threshold
    finding = (
        f"I/O wait above {rule.io_threshold:g}% while the GPU was below {rule.gpu_threshold:g}% in "
        f"{share:.0f}% of {len(judged)} samples (fires above {rule.threshold:g}%; first {skipped} skipped)"
    )
    advice = (
        (
            "the CPUs wait on storage while the GPU idles: train from local disk (File mode) rather than a network"
            f" file system, and raise num_workers{_workers_now(profile)} so that reads overlap"
        )
        if triggered
        else ""
    )
    return BottleneckVerdict(name, triggered, True, finding, advice)


def low_gpu_utilization(profile: Profile, has_gpu: bool, rule: LowGPUUtilizationRule) -> BottleneckVerdict:
    """SageMaker LowGPUUtilization: per window, p95 below ``threshold_p95``, or p95 above it with p5 below p5's."""
    name = "LowGPUUtilization"
    judged, skipped, reason = _gpu_samples(profile, has_gpu, rule.patience)
    if reason:
        return _not_evaluated(name, reason)
    size = scaled_window(rule.window, len(judged))
    stats = [(_p(w, 95), _p(w, 5)) for w in windows([_known(s.gpu_percent) for s in judged], size)]
    low = sum(1 for p95, _ in stats if p95 < rule.threshold_p95)
    fluctuating = sum(1 for p95, p5 in stats if p95 >= rule.threshold_p95 and p5 < rule.threshold_p5)
    p95s, p5s = [p95 for p95, _ in stats], [p5 for _, p5 in stats]
    finding = (
        f"GPU utilisation p95 {min(p95s):.0f}-{max(p95s):.0f}%, p5 {min(p5s):.0f}-{max(p5s):.0f}% over "
        f"{len(stats)} windows of {size} samples (first {skipped} skipped): "
        f"{low} under-used (p95 < {rule.threshold_p95:g}%), {fluctuating} fluctuating "
        f"(p5 < {rule.threshold_p5:g}%)"
    )
    advice = []
    if low:
        advice.append(f"the GPU has room: raise batch_size{_batch_size_now(profile)} or use a smaller GPU instance")
    if fluctuating:
        advice.append("the GPU idles between bursts of work: see DataWait and Dataloader (num_workers, prefetching)")
    return BottleneckVerdict(name, bool(low or fluctuating), True, finding, "; ".join(advice))


def batch_size(profile: Profile, has_gpu: bool, rule: BatchSizeRule) -> BottleneckVerdict:
    """SageMaker BatchSize: per window, p95 CPU, GPU and GPU memory utilisation all below their thresholds."""
    name = "BatchSize"
    judged, skipped, reason = _gpu_samples(profile, has_gpu, rule.patience, lambda s: s.gpu_memory_percent is not None)
    if reason:
        return _not_evaluated(name, reason)
    size = scaled_window(rule.window, len(judged))
    chunks = windows(judged, size)
    small = sum(
        1
        for w in chunks
        if _p([s.cpu_mean for s in w], 95) < rule.cpu_threshold_p95
        and _p([_known(s.gpu_percent) for s in w], 95) < rule.gpu_threshold_p95
        and _p([_known(s.gpu_memory_percent) for s in w], 95) < rule.gpu_memory_threshold_p95
    )
    cpu, gpu = _p([s.cpu_mean for s in judged], 95), _p([_known(s.gpu_percent) for s in judged], 95)
    memory = _p([_known(s.gpu_memory_percent) for s in judged], 95)
    finding = (
        f"p95 CPU {cpu:.0f}%, GPU {gpu:.0f}%, GPU memory {memory:.0f}% over the job (first {skipped} samples "
        f"skipped); all three below {rule.cpu_threshold_p95:g}/{rule.gpu_threshold_p95:g}/"
        f"{rule.gpu_memory_threshold_p95:g}% in {small} of {len(chunks)} windows of {size} samples"
    )
    advice = (
        (
            f"the instance is under-used: raise batch_size{_batch_size_now(profile)} (and the learning rate with it)"
            " or pick a smaller instance"
        )
        if small
        else ""
    )
    return BottleneckVerdict(name, bool(small), True, finding, advice)


def steady_steps(steps: Sequence[StepTiming]) -> list[StepTiming]:
    """The steps without the first of every uninterrupted run (a new epoch, mode or pass, or a resume).

    A pass's first batch waits for the loader's workers to start and fill their queues;
    that start-up is not what the step checks are about.
    """
    kept, previous = [], None
    for step in steps:
        if (
            previous is not None
            and (step.epoch, step.mode) == (previous.epoch, previous.mode)
            and step.step == previous.step + 1
        ):
            kept.append(step)
        previous = step
    return kept


def data_wait_share(steps: Sequence[StepTiming]) -> tuple[float, int] | None:
    """Percent of steady train step time spent waiting for data, and over how many steps; None if too few."""
    train = [s for s in steady_steps(steps) if s.mode == "train"]
    if len(train) < MIN_STEPS:
        return None
    total = sum(s.seconds for s in train)
    return (100.0 * sum(s.data_seconds for s in train) / total if total > 0 else 0.0), len(train)


def data_wait(profile: Profile, rule: DataWaitRule) -> BottleneckVerdict:
    """Ours: the share of training step time spent waiting for the loader."""
    name = "DataWait"
    measured = data_wait_share(profile.steps)
    if measured is None:
        return _not_evaluated(name, f"fewer than {MIN_STEPS} training steps recorded")
    share, count = measured
    triggered = share > rule.threshold
    finding = (
        f"training waited for data {share:.0f}% of its step time over {count} steps (fires above "
        f"{rule.threshold:g}%; each pass's first step left out)"
    )
    advice = ""
    if triggered:
        metadata = profile.metadata
        if metadata and metadata.num_workers >= metadata.cores:
            advice = (
                f"the loader is short of CPU with num_workers already {metadata.num_workers} for "
                f"{metadata.cores} cores: pre-resize the images or pick an instance with more cores"
            )
        else:
            advice = f"the loader cannot keep up: raise num_workers{_workers_now(profile)}"
    return BottleneckVerdict(name, triggered, True, finding, advice)


def dataloader(profile: Profile, rule: DataloaderRule, wait_rule: DataWaitRule) -> BottleneckVerdict:
    """SageMaker Dataloader, adapted (see :class:`DataloaderRule`): loader workers against usable cores."""
    name = "Dataloader"
    metadata = profile.metadata
    if metadata is None or metadata.cores <= 0:
        return _not_evaluated(name, "the profile has no metadata (num_workers, cores)")
    workers, cores = metadata.num_workers, metadata.cores
    share = 100.0 * workers / cores
    what = f"{workers} loader workers for {cores} cores ({share:.0f}%)"
    if share > rule.max_threshold:
        return BottleneckVerdict(
            name,
            True,
            True,
            f"{what}: above {rule.max_threshold:g}% of the cores",
            f"the workers contend for the cores with each other and the training process: lower num_workers to "
            f"about {cores}",
        )
    if share >= rule.min_threshold:
        return BottleneckVerdict(name, False, True, f"{what}: within {rule.min_threshold:g}-{rule.max_threshold:g}%")
    measured = data_wait_share(profile.steps)
    advice = f"raise num_workers to at least {math.ceil(rule.min_threshold * cores / 100)}"
    if measured is None:
        return BottleneckVerdict(name, True, True, f"{what}: below {rule.min_threshold:g}% of the cores", advice)
    wait = measured[0]
    if wait > wait_rule.threshold:
        return BottleneckVerdict(
            name,
            True,
            True,
            f"{what}: below {rule.min_threshold:g}% of the cores, and training waits for data {wait:.0f}% of its "
            "step time",
            advice,
        )
    return BottleneckVerdict(
        name,
        False,
        True,
        f"{what}: below {rule.min_threshold:g}% of the cores, but training waits for data only {wait:.0f}% of its "
        "step time, so more workers would not make it faster",
    )


def step_outlier(profile: Profile, rule: StepOutlierRule) -> BottleneckVerdict:
    """SageMaker StepOutlier: steps longer than mean + ``stddev`` standard deviations, per mode."""
    name = "StepOutlier"
    steady = steady_steps(profile.steps)
    modes = [rule.mode] if rule.mode else sorted({s.mode for s in steady})
    findings, triggered = [], False
    for mode in modes:
        seconds = np.asarray([s.seconds for s in steady if s.mode == mode], dtype=float)
        if len(seconds) < MIN_STEPS:
            continue
        mean, std = float(seconds.mean()), float(seconds.std())
        limit = mean + rule.stddev * std
        outliers = int((seconds > limit).sum()) if std > 0 else 0
        allowed = allowed_outliers(rule.n_outliers, len(seconds))
        triggered |= outliers > allowed
        findings.append(
            f"{mode}: {outliers} of {len(seconds)} steps over {limit:.3f} s (mean {mean:.3f} s + "
            f"{rule.stddev:g} sd), longest {seconds.max():.3f} s, {allowed} allowed"
        )
    if not findings:
        return _not_evaluated(name, f"fewer than {MIN_STEPS} steps recorded in any mode")
    advice = (
        (
            "see when they happened (the timestamps in steps.jsonl): checkpoint saves, slow storage reads, "
            "or other processes on the host taking the CPUs"
        )
        if triggered
        else ""
    )
    return BottleneckVerdict(name, triggered, True, "; ".join(findings), advice)


def _guarded(name: str, check: Callable[[], BottleneckVerdict]) -> BottleneckVerdict:
    """One check; a failing check becomes a verdict saying so, so that the others still come back."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - one broken check must not lose the report
        log.warning("bottlenecks: %s failed (%s: %s)", name, type(exc).__name__, exc)
        return _not_evaluated(name, f"the check failed ({type(exc).__name__}: {exc})")


def evaluate_bottlenecks(profile: Profile, has_gpu: bool, rules: Rules | None = None) -> list[BottleneckVerdict]:
    """Every check over ``profile``, in a fixed order; GPU checks are not evaluated when ``has_gpu`` is false."""
    rules = rules or Rules()
    checks: list[tuple[str, Callable[[], BottleneckVerdict]]] = [
        ("CPUBottleneck", lambda: cpu_bottleneck(profile, has_gpu, rules.cpu_bottleneck)),
        ("IOBottleneck", lambda: io_bottleneck(profile, has_gpu, rules.io_bottleneck)),
        ("LowGPUUtilization", lambda: low_gpu_utilization(profile, has_gpu, rules.low_gpu_utilization)),
        ("BatchSize", lambda: batch_size(profile, has_gpu, rules.batch_size)),
        ("Dataloader", lambda: dataloader(profile, rules.dataloader, rules.data_wait)),
        ("DataWait", lambda: data_wait(profile, rules.data_wait)),
        ("StepOutlier", lambda: step_outlier(profile, rules.step_outlier)),
    ]
    return [_guarded(name, check) for name, check in checks]
