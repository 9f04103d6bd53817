"""The processes `serve` supervises: stopping whole process groups, and MMS's relayed output."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

from dogbreed.serving.children import Child, OutputRelay, stop_children
from dogbreed.serving.readiness import process_alive

from .signal_child import recording_child


def grandchild_pid(pid_file: Path) -> int:
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the child never wrote its pid"
        time.sleep(0.05)
    return int(pid_file.read_text())


def test_stop_reaches_the_whole_group(tmp_path):
    # The leader waits on a grandchild, as MMS's launcher waits on its Java frontend.
    pid_file = tmp_path / "pid"
    child = Child.start("group", ["sh", "-c", f"sleep 120 & echo $! > {pid_file}; wait"])
    sleeper = grandchild_pid(pid_file)
    stop_children([child], {}, grace_s=5)
    assert child.exit_code() is not None
    deadline = time.monotonic() + 10
    while process_alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(sleeper)


def test_the_first_signal_goes_first_and_a_stubborn_child_is_killed(tmp_path):
    log = tmp_path / "log"
    # "front" records SIGQUIT and exits on it; "stubborn" ignores SIGTERM.
    front = Child.start("front", recording_child(log, signal.SIGQUIT, "quit"))
    stubborn = Child.start("stubborn", ["sh", "-c", f"trap '' TERM; echo up >> {log}; "
                                                   "while :; do sleep 0.05; done"])
    deadline = time.monotonic() + 30
    while (not log.exists() or log.read_text().count("up") < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.monotonic()
    stop_children([front, stubborn], {"front": signal.SIGQUIT}, grace_s=2)
    assert "quit" in log.read_text() and front.exit_code() == 0
    assert stubborn.exit_code() == -signal.SIGKILL
    assert time.monotonic() - start < 20


def test_a_child_already_gone_is_fine():
    child = Child.start("quick", ["true"])
    child.process.wait()
    stop_children([child], {"quick": signal.SIGQUIT}, grace_s=1)
    assert child.exit_code() == 0


def test_relay_copies_every_line_and_keeps_the_errors():
    read_fd, write_fd = os.pipe()
    out = io.BytesIO()
    relay = OutputRelay(os.fdopen(read_fd, "rb"), keep=2, out=out).start()
    lines = [
        "2026 [INFO ] WorkerLifeCycle - model loaded",
        "2026 [ERROR] WorkerThread - Backend worker error",
        "2026 [INFO ] WorkerLifeCycle - Traceback (most recent call last):",
        "2026 [INFO ] WorkerLifeCycle - ValueError: bad model",
        "2026 [INFO ] WorkerThread - Backend response time: 3",
    ]
    with os.fdopen(write_fd, "wb") as writer:
        writer.write("".join(line + "\n" for line in lines).encode())
    relay.thread.join(30)
    assert out.getvalue().decode().splitlines() == lines
    assert relay.problems() == lines[2:4]


def test_relay_keeps_reading_when_our_output_fails():
    class Broken(io.BytesIO):
        def write(self, _data):
            raise BrokenPipeError

    relay = OutputRelay(io.BytesIO(b"a Exception\nb\n"), out=Broken()).start()
    relay.thread.join(30)
    assert not relay.thread.is_alive() and relay.problems() == ["a Exception"]
