"""The job's profile, recorded cheaply while it trains, as files a report is rebuilt from.

SageMaker's Profiler collects system and framework metrics only inside SageMaker, so the
job samples its own, into one directory (``/opt/ml/output/data/profile`` in a job) in the
format :mod:`dogbreed.profile_format` defines and reads back::

    metadata.json    write_metadata
    system.jsonl     SystemMonitor, every interval_s
    steps.jsonl      StepRecorder, every training or evaluation step
    operators.json   OperatorProfiler, over a few training steps, whose torch.profiler trace
                     goes to the job's TensorBoard folder (Perfetto, chrome://tracing)

The JSON lines files are appended and flushed as the job goes, so a job killed mid-way
leaves files that :func:`dogbreed.profile_format.load_profile` still reads. No failure
here may stop training: each part logs a warning and stops recording instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import torch

from dogbreed.cpus import usable_cpus
from dogbreed.profile_format import (
    METADATA_FILE,
    OPERATORS_FILE,
    STEPS_FILE,
    SYSTEM_FILE,
    OperatorStat,
    OperatorSummary,
    ProfileMetadata,
    StepTiming,
    SystemSample,
)

log = logging.getLogger(__name__)


def _cuda_device(device: torch.device | str | None) -> torch.device | None:
    """The CUDA device to sample, or None; ``None`` means the current one when CUDA is available."""
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


# --- metadata.json -------------------------------------------------------------------


def write_metadata(
    directory: Path | str,
    *,
    num_workers: int,
    batch_size: int,
    cores: int | None = None,
    device: torch.device | str = "cpu",
) -> ProfileMetadata:
    """Write ``metadata.json``; ``cores`` defaults to :func:`dogbreed.cpus.usable_cpus`."""
    cuda = _cuda_device(device)
    metadata = ProfileMetadata(
        num_workers=num_workers,
        batch_size=batch_size,
        cores=cores if cores is not None else usable_cpus(),
        device=str(device),
        gpu_name=torch.cuda.get_device_name(cuda) if cuda is not None else None,
        timestamp=time.time(),
    )
    path = Path(directory) / METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(metadata), indent=2) + "\n", encoding="utf-8")
    return metadata


# --- system.jsonl --------------------------------------------------------------------


class _Counters(NamedTuple):
    """psutil's cumulative counters at one moment."""

    monotonic: float
    cpu: list[Any]  # psutil scputimes per core
    disk: Any  # psutil sdiskio or None
    net: Any  # psutil snetio or None


def _cpu_total(times: Any) -> float:
    """All of a core's time; Linux counts guest time inside user/nice too, so it is taken out once."""
    return sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _cpu_idle(times: Any) -> float:
    return times.idle + getattr(times, "iowait", 0.0)


def _busy_percent(before: Any, after: Any) -> float:
    total = _cpu_total(after) - _cpu_total(before)
    if total <= 0:
        return 0.0
    busy = total - (_cpu_idle(after) - _cpu_idle(before))
    return round(min(100.0, max(0.0, 100.0 * busy / total)), 1)


def _iowait_percent(before: list[Any], after: list[Any]) -> float | None:
    if not after or not hasattr(after[0], "iowait"):
        return None
    # strict=False: a CPU may go offline between two samples; the CPUs of both are compared.
    total = sum(_cpu_total(a) - _cpu_total(b) for b, a in zip(before, after, strict=False))
    iowait = sum(a.iowait - b.iowait for b, a in zip(before, after, strict=False))
    return round(100.0 * iowait / total, 1) if total > 0 else 0.0


def _rate(before: Any, after: Any, name: str, seconds: float) -> float | None:
    if before is None or after is None:
        return None
    # Counters can wrap or reset (a device removed); a negative rate is noise, not data.
    return round(max(0.0, getattr(after, name) - getattr(before, name)) / seconds, 1)


class _GpuProbe:
    """Utilisation and memory of one CUDA device through torch (NVML for utilisation)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.total_bytes = torch.cuda.get_device_properties(device).total_memory
        self._utilization = True

    def utilization(self) -> float | None:
        """The device's busy share, or None for good once NVML is found missing or failing."""
        if not self._utilization:
            return None
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception as exc:  # noqa: BLE001 - pynvml missing or NVML failing: keep the memory figures
            log.warning(
                "profile: GPU utilisation is not sampled (%s: %s); GPU memory still is", type(exc).__name__, exc
            )
            self._utilization = False
            return None

    def fill(self, sample: SystemSample) -> None:
        """Add the GPU's figures to ``sample``."""
        sample.gpu_percent = self.utilization()
        reserved = torch.cuda.memory_reserved(self.device)
        sample.gpu_memory_used_bytes = reserved
        sample.gpu_memory_allocated_bytes = torch.cuda.memory_allocated(self.device)
        sample.gpu_memory_percent = round(100.0 * reserved / self.total_bytes, 1) if self.total_bytes else None


class _Sampler:
    """Turns psutil's cumulative counters into one :class:`SystemSample` per call."""

    def __init__(self, gpu: _GpuProbe | None):
        self.gpu = gpu
        self._last = self._read()

    @staticmethod
    def _read() -> _Counters:
        return _Counters(
            time.monotonic(), psutil.cpu_times(percpu=True), psutil.disk_io_counters(), psutil.net_io_counters()
        )

    def sample(self) -> SystemSample:
        """The interval since the previous call (or since construction)."""
        before, now = self._last, self._read()
        self._last = now
        seconds = max(now.monotonic - before.monotonic, 1e-6)
        memory = psutil.virtual_memory()
        sample = SystemSample(
            timestamp=time.time(),
            # strict=False: a CPU may go offline between two samples.
            cpu_percent=[_busy_percent(b, a) for b, a in zip(before.cpu, now.cpu, strict=False)],
            cpu_iowait_percent=_iowait_percent(before.cpu, now.cpu),
            memory_used_bytes=memory.used,
            memory_percent=memory.percent,
            disk_read_bytes_per_s=_rate(before.disk, now.disk, "read_bytes", seconds),
            disk_write_bytes_per_s=_rate(before.disk, now.disk, "write_bytes", seconds),
            net_sent_bytes_per_s=_rate(before.net, now.net, "bytes_sent", seconds),
            net_recv_bytes_per_s=_rate(before.net, now.net, "bytes_recv", seconds),
        )
        if self.gpu is not None:
            self.gpu.fill(sample)
        return sample


class SystemMonitor:
    """Samples the host (and the GPU) every ``interval_s`` into ``system.jsonl`` on a daemon thread.

    A sample reads a few /proc files (and NVML on a GPU) in this process, with no subprocess:
    about 0.3 ms on a 2-core host, more with more cores (/proc/stat has a line per core),
    most of it in I/O that releases the GIL. Each line is flushed as written; at the default
    2 Hz that is two small writes a second, and a killed job loses at most the sample in flight.
    ``device``: the CUDA device to sample; None samples the current one when CUDA is available.
    """

    def __init__(self, directory: Path | str, interval_s: float = 0.5, device: torch.device | str | None = None):
        self.path = Path(directory) / SYSTEM_FILE
        self.interval_s = interval_s
        self.device = device
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SystemMonitor:
        """Take the counters' baseline and start sampling; a failure is logged, not raised."""
        if self._thread is not None:
            return self
        try:
            cuda = _cuda_device(self.device)
            sampler = _Sampler(_GpuProbe(cuda) if cuda is not None else None)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = self.path.open("a", encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - a profile is never worth a failed job
            log.warning("profile: system monitor not started (%s: %s)", type(exc).__name__, exc)
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(sampler, file), name="system-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self, sampler: _Sampler, file) -> None:
        warned = False
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    line = json.dumps(asdict(sampler.sample()))
                except Exception as exc:  # noqa: BLE001 - skip this sample, try the next
                    if not warned:
                        log.warning("profile: a system sample failed (%s: %s)", type(exc).__name__, exc)
                        warned = True
                    continue
                file.write(line + "\n")
                file.flush()
                self.samples += 1
        except OSError as exc:  # the disk is full or gone: stop sampling, keep training
            log.warning("profile: system monitor stopped (%s)", exc)
        finally:
            file.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling; returns as soon as a sample in flight is written (the wait is interruptible)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> SystemMonitor:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


# --- steps.jsonl ---------------------------------------------------------------------


class StepRecorder:
    """Appends :class:`StepTiming` lines to ``steps.jsonl`` through a 64 KiB buffer.

    A record is one ``json.dumps`` and a buffered write (microseconds); the buffer reaches
    the file when full or every ``flush_interval_s``, so a killed job loses at most that
    many seconds of steps (call :meth:`flush` at an epoch's end to be sure of it). A file
    that cannot be opened or written is logged once, and recording stops. ``directory=None``
    records nothing (profile=off), so the loop needs no ``if`` around its calls.
    """

    def __init__(self, directory: Path | str | None, flush_interval_s: float = 10.0):
        self.path = Path(directory) / STEPS_FILE if directory is not None else None
        self.flush_interval_s = flush_interval_s
        self._flushed = time.monotonic()
        self._file = None
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8", buffering=64 * 1024)
        except OSError as exc:
            log.warning("profile: step timings not recorded (%s)", exc)

    def record(self, timing: StepTiming) -> None:
        """Append one step's timing; flushes when ``flush_interval_s`` has passed since the last flush."""
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(vars(timing)) + "\n")
            if time.monotonic() - self._flushed >= self.flush_interval_s:
                self.flush()
        except OSError as exc:
            self._give_up(exc)

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            self._give_up(exc)
        self._flushed = time.monotonic()

    def _give_up(self, exc: OSError) -> None:
        log.warning("profile: step timings no longer recorded (%s)", exc)
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def close(self) -> None:
        """Flush and close; recording after this is a no-op."""
        if self._file is None:
            return
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StepRecorder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class PhaseClock:
    """Seconds between the loop's phase boundaries: ``lap()`` returns the time since the last lap.

    CUDA kernels run asynchronously, so without synchronising a lap after the backward pass
    measures only the time to queue its kernels; the GPU's time then shows up in whichever
    later phase blocks (the optimizer step, where AMP's GradScaler reads its inf check, or
    the next wait for data, which then overstates how long the GPU waited).

    ``synchronize=True`` waits for the GPU at every lap, which makes the phases honest but
    costs the overlap of CPU and GPU work: the next batch's host-side work can no longer run
    while the previous kernels finish, so steps get slower. Use it for a diagnostic run, not
    by default. On the CPU it does nothing.
    """

    def __init__(self, device: torch.device | str | None = None, synchronize: bool = False):
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.synchronize = synchronize and device.type == "cuda"
        self.device = device
        self._last = time.perf_counter()

    def reset(self) -> None:
        """Start timing from now (before a pass's first batch)."""
        self._last = time.perf_counter()

    def lap(self) -> float:
        """Seconds since the previous lap (or reset), after the GPU's queued work when synchronising."""
        if self.synchronize:
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        return elapsed


# --- operators.json and trace/ -------------------------------------------------------


def _is_step_marker(name: str) -> bool:
    """torch.profiler's own "ProfilerStep#N" ranges (averaged as "ProfilerStep*"): whole steps, not operators."""
    return name.startswith("ProfilerStep")


def top_cpu_operators(averages: Iterable[Any], top: int) -> list[OperatorStat]:
    """The ``top`` operators by self CPU time, from ``profile.key_averages()``."""
    events = [e for e in averages if not _is_step_marker(e.key) and e.self_cpu_time_total > 0]
    overall = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        OperatorStat(
            e.key,
            e.count,
            round(e.self_cpu_time_total / 1000, 3),
            round(e.cpu_time_total / 1000, 3),
            round(100.0 * e.self_cpu_time_total / overall, 2),
        )
        for e in events[:top]
    ]


def top_cuda_operators(averages: Iterable[Any], top: int) -> list[OperatorStat]:
    """The ``top`` host operators by the GPU time of the kernels they launched themselves.

    The share is of all kernel time, counted as torch's own table does: over the device's
    events (kernels, copies) except user annotations.
    """
    averages = list(averages)
    kernels = [e for e in averages if e.device_type != torch.autograd.DeviceType.CPU and not e.is_user_annotation]
    overall = sum(e.self_device_time_total for e in kernels) or 1.0
    ops = [
        e
        for e in averages
        if e.device_type == torch.autograd.DeviceType.CPU
        and not _is_step_marker(e.key)
        and e.self_device_time_total > 0
    ]
    ops.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return [
        OperatorStat(
            e.key,
            e.count,
            round(e.self_device_time_total / 1000, 3),
            round(e.device_time_total / 1000, 3),
            round(100.0 * e.self_device_time_total / overall, 2),
        )
        for e in ops[:top]
    ]


class OperatorProfiler:
    """torch.profiler over a few training steps: a trace in ``trace_dir``, the top operators in ``summary_path``.

    Call :meth:`start` before the first training step, :meth:`step` after each, :meth:`close`
    at the end (or on failure). Steps ``wait`` and ``warmup`` are skipped and warmed up (the
    first step's cudnn autotuning and allocations are not typical), the next ``active`` are
    recorded; then the profiler is stopped and dropped, so later steps cost one attribute
    test. Any profiler failure is logged and ends profiling; it never reaches the loop.
    """

    def __init__(
        self,
        trace_dir: Path | str,
        summary_path: Path | str,
        wait: int = 1,
        warmup: int = 1,
        active: int = 3,
        device: torch.device | str | None = None,
        top: int = 20,
    ):
        self.trace_dir = Path(trace_dir)
        self.summary_path = Path(summary_path)
        self.wait, self.warmup, self.active, self.top = wait, warmup, active, top
        self.cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        self.steps = 0  # step() calls so far
        self._completed = 0  # steps finished when the trace is handed over
        self.summary: OperatorSummary | None = None
        self._profiler: Any = None

    @property
    def profiling(self) -> bool:
        return self._profiler is not None

    def start(self) -> OperatorProfiler:
        """Start the profiler (it records nothing until its schedule says so)."""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        else:
            # Tracing the CPU alone, kineto (the profiler's C++ side) prints nothing but its
            # "USDT: profiler_start/stop" markers and, on a host without a GPU, "ERROR: ...
            # gpuGetDeviceCount failed with code 35": noise that reads as a fault in a healthy
            # job's log. Its log level, read when a profiler first starts in the process, goes
            # above its highest (USDT, 5); a level the user set stands.
            os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        try:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            self._profiler = torch.profiler.profile(
                activities=activities,
                schedule=torch.profiler.schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1),
                on_trace_ready=self._on_trace_ready,
                record_shapes=False,
            )
            self._profiler.start()
        except Exception as exc:  # noqa: BLE001 - a profile is never worth a failed job
            self._fail("not started", exc)
        return self

    def step(self) -> None:
        """Mark the end of one training step; after the active steps the profiler is closed."""
        if self._profiler is None:
            return
        self._completed = self.steps + 1  # the trace may be handed over inside this call
        try:
            self._profiler.step()
        except Exception as exc:  # noqa: BLE001 - the profiler never fails training; _fail logs why
            self._fail("stopped", exc)
            return
        self.steps += 1
        if self.steps >= self.wait + self.warmup + self.active:
            self.close()  # the trace was handed over at this step; what follows must cost nothing

    def close(self) -> None:
        """Stop the profiler; if it was recording, what it has is still written."""
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return
        self._completed = self.steps  # a step in flight is not a whole step
        try:
            profiler.stop()
        except Exception as exc:  # noqa: BLE001 - the profiler never fails training; _fail logs why
            self._fail("failed to stop", exc)

    def __enter__(self) -> OperatorProfiler:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _fail(self, what: str, exc: Exception) -> None:
        log.warning("profile: operator profiler %s (%s: %s); training goes on", what, type(exc).__name__, exc)
        profiler, self._profiler = self._profiler, None
        if profiler is not None:
            with contextlib.suppress(Exception):  # already failing; the warning above says so
                profiler.stop()

    def _on_trace_ready(self, profiler: Any) -> None:
        """Write the trace and the summary; errors are logged here, since torch would raise them into step()."""
        try:
            torch.profiler.tensorboard_trace_handler(str(self.trace_dir))(profiler)
        except Exception as exc:  # noqa: BLE001 - the profiler never fails training; the warning says why
            log.warning("profile: operator trace not written (%s: %s)", type(exc).__name__, exc)
        try:
            averages = profiler.key_averages()
            recorded = max(0, min(self._completed - self.wait - self.warmup, self.active))
            self.summary = OperatorSummary(
                steps=recorded,
                device="cuda" if self.cuda else "cpu",
                by_self_cpu=top_cpu_operators(averages, self.top),
                by_self_cuda=top_cuda_operators(averages, self.top) if self.cuda else [],
            )
            self.summary_path.parent.mkdir(parents=True, exist_ok=True)
            self.summary_path.write_text(json.dumps(asdict(self.summary), indent=1) + "\n", encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - the profiler never fails training; the warning says why
            log.warning("profile: operator summary not written (%s: %s)", type(exc).__name__, exc)


class JobProfiler:
    """The profile of one training job: the system monitor, step timings and top operators.

    ``directory`` None (``profile=off``) records nothing and costs nothing. The operator
    trace goes to ``trace_dir`` (the job's TensorBoard folder), its summary beside the rest.
    """

    def __init__(
        self, directory: Path | None, trace_dir: Path, device: torch.device, num_workers: int, batch_size: int
    ):
        self.directory = directory
        self.device = device
        self.recorder = StepRecorder(directory)
        self.operators = OperatorProfiler(trace_dir, Path(directory or ".") / OPERATORS_FILE, device=device)
        self.monitor = SystemMonitor(directory, device=device) if directory is not None else None
        self._settings = {"num_workers": num_workers, "batch_size": batch_size}

    @classmethod
    def off(cls, device: torch.device) -> JobProfiler:
        """Records nothing (``profile=off``, or before the job starts profiling)."""
        return cls(None, Path("."), device, 0, 0)

    def start(self) -> JobProfiler:
        if self.directory is not None:
            write_metadata(self.directory, device=str(self.device), **self._settings)
            if self.monitor is not None:  # set whenever directory is
                self.monitor.start()
            self.operators.start()
        return self

    def close(self) -> None:
        self.operators.close()
        self.recorder.close()
        if self.monitor is not None:
            self.monitor.stop()
