"""The profile's file format: what a training job's profile directory holds, and how it is read back.

The job records its profile (:mod:`dogbreed.training.profiler`, which needs torch and psutil)
and the report judges it (:mod:`dogbreed.report.bottlenecks`), so the format belongs to
neither: the file names, the records and the reader live here, with no torch. One directory
(``/opt/ml/output/data/profile`` in a job)::

    metadata.json    one ProfileMetadata: loader workers, batch size, usable cores, device
    system.jsonl     one SystemSample per line, every sampling interval
    steps.jsonl      one StepTiming per training or evaluation step
    operators.json   one OperatorSummary: the top torch operators over a few training steps

The JSON lines files are appended and flushed as the job goes, so a job killed mid-way
leaves files that :func:`load_profile` still reads (a torn last line is skipped). The
operators' torch.profiler trace is not part of it: it goes to the job's TensorBoard folder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance  # typeshed's protocol of a dataclass; no runtime module

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
SYSTEM_FILE = "system.jsonl"
STEPS_FILE = "steps.jsonl"
OPERATORS_FILE = "operators.json"

T = TypeVar("T", bound="DataclassInstance")


# --- metadata.json -------------------------------------------------------------------


@dataclass
class ProfileMetadata:
    """What the verdicts need to know of the job besides its measurements."""

    num_workers: int
    batch_size: int
    cores: int
    device: str
    gpu_name: str | None = None
    timestamp: float = 0.0


# --- system.jsonl --------------------------------------------------------------------


@dataclass
class SystemSample:
    """The host (and GPU) over one sampling interval. Rates and shares are since the previous sample."""

    timestamp: float  # time.time() at the end of the interval
    cpu_percent: list[float]  # busy share of each core
    cpu_iowait_percent: float | None = None  # share of all cores' time spent waiting on I/O (Linux only)
    memory_used_bytes: int = 0
    memory_percent: float = 0.0
    disk_read_bytes_per_s: float | None = None  # None where the host reports no disks
    disk_write_bytes_per_s: float | None = None
    net_sent_bytes_per_s: float | None = None
    net_recv_bytes_per_s: float | None = None
    gpu_percent: float | None = None  # None without a GPU, or without pynvml (torch.cuda.utilization needs it)
    gpu_memory_used_bytes: int | None = None  # reserved by torch's caching allocator: what nvidia-smi would show
    gpu_memory_allocated_bytes: int | None = None  # held by live tensors
    gpu_memory_percent: float | None = None  # reserved / the device's total

    @property
    def cpu_mean(self) -> float:
        """Busy share of all cores together."""
        return sum(self.cpu_percent) / len(self.cpu_percent) if self.cpu_percent else 0.0


# --- steps.jsonl ---------------------------------------------------------------------


@dataclass
class StepTiming:
    """Where one step's wall time went. On CUDA, see :class:`dogbreed.training.profiler.PhaseClock` for what
    the phases measure."""

    epoch: int
    step: int  # within the epoch and mode, from 0
    mode: str  # "train" or "eval"
    images: int
    data_seconds: float  # waiting for the loader's batch
    forward_backward_seconds: float  # forward only in evaluation
    optimizer_seconds: float = 0.0  # none in evaluation
    timestamp: float = field(default_factory=time.time)

    @property
    def seconds(self) -> float:
        return self.data_seconds + self.forward_backward_seconds + self.optimizer_seconds


# --- operators.json ------------------------------------------------------------------


@dataclass
class OperatorStat:
    """One operator's time over the profiled steps."""

    name: str
    calls: int
    self_ms: float  # in the operator itself, not the operators it called
    total_ms: float  # including them
    share_percent: float  # of the self time of all operators on that device


@dataclass
class OperatorSummary:
    """The top operators of a few profiled training steps."""

    steps: int  # steps actually recorded (fewer if the profiler was closed early)
    device: str
    by_self_cpu: list[OperatorStat]
    by_self_cuda: list[OperatorStat] = field(default_factory=list)  # empty without CUDA


# --- reading a profile back ----------------------------------------------------------


@dataclass
class Profile:
    """Everything a profile directory holds; parts that were never written are empty or None."""

    metadata: ProfileMetadata | None
    samples: list[SystemSample]
    steps: list[StepTiming]
    operators: OperatorSummary | None = None
    skipped_lines: int = 0  # torn or unreadable lines left out


def _build(cls: type[T], data: dict[str, Any]) -> T:
    """``cls`` from a dict, ignoring keys it does not know (files written by a newer version)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _read_jsonl(path: Path, cls: type[T]) -> tuple[list[T], int]:
    """The file's records, and how many lines could not be read (a torn last line, typically)."""
    if not path.is_file():
        return [], 0
    records, skipped = [], 0
    with path.open(encoding="utf-8", errors="replace") as file:
        for line in file:
            if not line.strip():
                continue
            try:
                records.append(_build(cls, json.loads(line)))
            except (ValueError, TypeError, AttributeError):  # torn JSON, or not a record of ours
                skipped += 1
    return records, skipped


def _read_operators(path: Path) -> OperatorSummary | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return OperatorSummary(
            steps=data["steps"],
            device=data["device"],
            by_self_cpu=[_build(OperatorStat, o) for o in data.get("by_self_cpu", [])],
            by_self_cuda=[_build(OperatorStat, o) for o in data.get("by_self_cuda", [])],
        )
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("profile: %s unreadable (%s)", path, exc)
        return None


def _read_metadata(path: Path) -> ProfileMetadata | None:
    if not path.is_file():
        return None
    try:
        return _build(ProfileMetadata, json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        log.warning("profile: %s unreadable (%s)", path, exc)
        return None


def load_profile(directory: Path | str, operators_path: Path | str | None = None) -> Profile:
    """Read a profile directory back; ``operators_path`` defaults to ``directory/operators.json``."""
    directory = Path(directory)
    samples, skipped_samples = _read_jsonl(directory / SYSTEM_FILE, SystemSample)
    steps, skipped_steps = _read_jsonl(directory / STEPS_FILE, StepTiming)
    if skipped_samples or skipped_steps:
        log.info("profile: %d torn or unreadable lines skipped in %s", skipped_samples + skipped_steps, directory)
    return Profile(
        metadata=_read_metadata(directory / METADATA_FILE),
        samples=samples,
        steps=steps,
        operators=_read_operators(Path(operators_path) if operators_path else directory / OPERATORS_FILE),
        skipped_lines=skipped_samples + skipped_steps,
    )
