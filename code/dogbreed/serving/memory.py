"""Whether a multi-model endpoint has the memory to load one more model.

SageMaker's multi-model contract asks for 507 when the container cannot load a model for
lack of memory, so that SageMaker unloads a less used one and tries again. MMS answers 507
when a worker's load raises ``MemoryError`` (or the worker is killed with status 137, as
the kernel's OOM killer does), so each worker checks before it loads
(:func:`ensure_memory_for`, called by :mod:`dogbreed.serving.handler_service`): it needs
about :data:`LOAD_FACTOR` times the largest ONNX file of the model dir (the weights, ONNX
Runtime's optimised copy of the graph, its arena), and refuses with ``MemoryError`` when
the container has less than that available, by the tighter of its cgroup's limit and
the kernel's ``MemAvailable``. An estimate, made before anything is allocated: a load that
passes it and still runs out is the OOM killer's 137, which MMS also answers with 507.
"""

from __future__ import annotations

from pathlib import Path

ONNX_FILES = ("model.onnx", "model.int8.onnx")
# An estimate, not a measurement: the weights as read, ONNX Runtime's optimised copy of
# them, and as much again for its arena and a request in flight.
LOAD_FACTOR = 3
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
MEMINFO = Path("/proc/meminfo")


def memory_needed_bytes(model_dir: str | Path) -> int:
    """What one worker needs to load the model of ``model_dir``: :data:`LOAD_FACTOR` x its largest ONNX file."""
    sizes = [path.stat().st_size for name in ONNX_FILES if (path := Path(model_dir, name)).is_file()]
    return LOAD_FACTOR * max(sizes, default=0)


def _read_int(path: Path) -> int | None:
    """The integer in ``path``; None when it is missing or says ``max`` (no limit)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_available_bytes(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> int | None:
    """The container's memory limit less its usage; None when it has no limit."""
    for limit_file, usage_file in (
        (v2 / "memory.max", v2 / "memory.current"),
        (v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        # cgroup v1 says "no limit" with a number near 2**63.
        if limit is not None and usage is not None and limit < 2**60:
            return max(0, limit - usage)
    return None


def meminfo_available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """The kernel's estimate of the memory available without swapping (``MemAvailable``)."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def available_bytes() -> int | None:
    """The memory this container can still use: the tighter of its cgroup and the kernel's estimate."""
    known = [value for value in (cgroup_available_bytes(), meminfo_available_bytes()) if value is not None]
    return min(known, default=None)


def ensure_memory_for(model_dir: str | Path, available: int | None = None) -> None:
    """Raise ``MemoryError`` (MMS: 507) when ``available`` (default: measured) is below what the model needs.

    Nothing measurable (no cgroup limit, no ``/proc/meminfo``) lets the load go ahead: the
    OOM killer's 137 is then the only answer, and MMS turns it into 507 too.
    """
    available = available_bytes() if available is None else available
    needed = memory_needed_bytes(model_dir)
    if available is not None and available < needed:
        raise MemoryError(
            f"not enough memory to load the model of {model_dir}: it needs about {needed / 2**20:.0f} MiB "
            f"({LOAD_FACTOR} x its ONNX file), {available / 2**20:.0f} MiB are available"
        )
