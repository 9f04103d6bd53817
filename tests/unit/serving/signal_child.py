"""A stand-in child that records a signal, as nginx does for SIGQUIT, whatever it inherited.

A shell cannot trap a signal that was ignored when it started (POSIX), and a non-interactive
shell starts its background jobs with SIGINT and SIGQUIT ignored: under `cmd &`, as CI may run
the suite, a `sh -c "trap ... QUIT"` stand-in never sees SIGQUIT. nginx sets its own handlers,
and so does this Python stand-in.
"""

from __future__ import annotations

import sys
from pathlib import Path

_SCRIPT = """
import os, signal, sys
log, signum, line, pid_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def record(*_):
    with open(log, "a") as f:
        f.write(line + "\\n")
    sys.exit(0)
signal.signal(signum, record)
with open(log, "a") as f:
    f.write("up\\n")
if pid_file:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
while True:
    signal.pause()
"""


def recording_child(log: Path, signum: int, line: str, pid_file: Path | None = None) -> list[str]:
    """The command of a child that appends ``up`` to ``log`` once its handler is set (and writes its
    pid to ``pid_file``), then ``line`` when ``signum`` arrives, and exits 0."""
    return [sys.executable, "-c", _SCRIPT, str(log), str(int(signum)), line, str(pid_file or "")]
