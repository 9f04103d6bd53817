"""The processes ``serve`` runs (nginx and multi-model-server) and MMS's output.

Each child runs in its own process group, so one signal reaches all of it (MMS's launcher,
its Java frontend and the Python workers) and a terminal's Ctrl-C reaches only ``serve``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

logger = logging.getLogger("dogbreed.serve")


@dataclass
class Child:
    """A started child process, named for the log."""

    name: str
    process: subprocess.Popen

    @classmethod
    def start(cls, name: str, command: list[str], **popen) -> Child:
        """Start ``command`` in a new session (and so a new process group)."""
        logger.info("starting %s: %s", name, " ".join(command))
        return cls(name, subprocess.Popen(command, start_new_session=True, **popen))

    def exit_code(self) -> int | None:
        """The exit code once the group's leader has exited, else None."""
        return self.process.poll()

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (nothing if it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def wait_until(self, deadline: float) -> bool:
        """Wait for the leader to exit until ``deadline`` (monotonic); True if it has."""
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False


def stop_children(children: list[Child], first: dict[str, int], grace_s: float) -> None:
    """Stop ``children`` within ``grace_s``, then leave nothing of their groups behind.

    ``first`` names a signal to send a child before the others are stopped (nginx:
    SIGQUIT, to finish the requests in flight while MMS still answers them); it gets
    half the grace. Then SIGTERM to every group, and SIGKILL for what is left at the end.
    """
    deadline = time.monotonic() + grace_s
    for child in children:
        if child.name in first and child.exit_code() is None:
            child.signal_group(first[child.name])
            child.wait_until(time.monotonic() + grace_s / 2)
    for child in children:
        if child.exit_code() is None:
            child.signal_group(signal.SIGTERM)
    for child in children:
        if not child.wait_until(deadline):
            logger.warning("%s still running after %.0f s; killing it", child.name, grace_s)
            child.signal_group(signal.SIGKILL)
            child.process.wait()
    # The leaders have exited; make sure their groups (MMS's Java frontend, its workers) went too.
    for child in children:
        child.signal_group(signal.SIGTERM)
    time.sleep(0.2)
    for child in children:
        child.signal_group(signal.SIGKILL)


class OutputRelay:
    """Copies a child's output to ours line by line, keeping its latest error lines.

    MMS's own log says why a worker does not come up (a timeout, an exception in
    ``model_fn``, a killed process); :class:`~dogbreed.serving.readiness.ReadyWatch` quotes
    these lines when the workers are late.
    """

    MARKERS = ("[ERROR]", "Error", "Exception", "Traceback")

    def __init__(self, stream: IO[bytes], keep: int = 8, out: IO[bytes] | None = None):
        self.stream = stream
        self.out = out if out is not None else sys.stdout.buffer
        self._problems: collections.deque[str] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="mms-output", daemon=True)

    def start(self) -> OutputRelay:
        self.thread.start()
        return self

    def problems(self) -> list[str]:
        """The latest lines that look like errors, oldest first."""
        with self._lock:
            return list(self._problems)

    def _run(self) -> None:
        for line in iter(self.stream.readline, b""):
            try:
                self.out.write(line)
                self.out.flush()
            except (OSError, ValueError):
                pass  # keep reading, or MMS would block on a full pipe
            text = line.decode("utf-8", "replace").rstrip()
            if any(marker in text for marker in self.MARKERS):
                with self._lock:
                    self._problems.append(text)
        self.stream.close()
