"""How many CPUs this process may use: one answer for the loader workers, the profile and the server.

``os.cpu_count()`` is the host's count. A container may use fewer: its CPU set (the
affinity mask, ``docker run --cpuset-cpus``) and a CPU quota, which ``docker run --cpus`` and
SageMaker set: cgroup v2's ``/sys/fs/cgroup/cpu.max``, or, on hosts still on cgroup v1,
``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` in ``/sys/fs/cgroup/cpu``. Torch-free:
training and serving both read it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU_DIR = Path("/sys/fs/cgroup/cpu")


def usable_cpus(cpu_max: Path | str = CGROUP_CPU_MAX, v1_cpu_dir: Path | str = CGROUP_V1_CPU_DIR) -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup's CPU quota (v2's
    ``cpu_max``, else v1's files in ``v1_cpu_dir``); at least 1."""
    cpus = _affinity_cpus()
    quota = cgroup_cpu_quota(cpu_max) if Path(cpu_max).exists() else cgroup_v1_cpu_quota(v1_cpu_dir)
    return max(1, cpus if quota is None else min(cpus, quota))


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity mask, the host's count
        return os.cpu_count() or 1


def cgroup_v1_cpu_quota(cpu_dir: Path | str = CGROUP_V1_CPU_DIR) -> int | None:
    """The whole CPUs a cgroup v1 CFS quota grants, rounded up; None where there is no quota.

    ``cpu.cfs_quota_us`` is -1 without a quota; with one, it and ``cpu.cfs_period_us`` read as
    v2's ``cpu.max`` does, and are parsed (and their faults logged) the same way.
    """
    directory = Path(cpu_dir)
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring the CPU quota: cannot read %s: %s", directory, exc)
        return None
    return _parse_quota(f"max {period}" if quota == "-1" else f"{quota} {period}", directory)


def cgroup_cpu_quota(cpu_max: Path | str = CGROUP_CPU_MAX) -> int | None:
    """The whole CPUs a cgroup v2 ``cpu.max`` grants, rounded up; None where there is no quota.

    ``cpu.max`` reads ``QUOTA PERIOD`` in microseconds: ``150000 100000`` (``--cpus 1.5``)
    gives 2, ``max 100000`` no quota. No file (cgroup v1, not Linux) means no quota; a file
    that cannot be read or parsed is logged and ignored, since a CPU count is no reason to
    stop a job or a server.
    """
    path = Path(cpu_max)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring the CPU quota: cannot read %s: %s", path, exc)
        return None
    return _parse_quota(text, path)


def _parse_quota(text: str, path: Path) -> int | None:
    """``QUOTA PERIOD`` (or ``max PERIOD``) read from ``path``, in whole CPUs rounded up."""
    fields = text.split()
    if fields[:1] == ["max"]:
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
        if quota <= 0 or period <= 0:
            raise ValueError
    except (IndexError, ValueError):
        log.warning("ignoring the CPU quota: %s holds %r, not 'QUOTA PERIOD'", path, text.strip())
        return None
    return -(-quota // period)  # ceiling: 1.5 CPUs' worth of time keeps 2 threads busy
