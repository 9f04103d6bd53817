"""/ping's ready file: workers' loaded markers, live pids, and what the watch logs.

The workers here are real processes (``sleep``) standing in for MMS's Python workers: a
marker counts while its process runs and stops counting when it is killed, as a worker
that MMS restarts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dogbreed.serving import readiness
from dogbreed.serving.readiness import ReadyWatch, loaded_workers, process_alive


class FakeWorkers:
    """Processes that 'load the model' by leaving a marker named by their pid."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.processes: list[subprocess.Popen] = []

    def load(self) -> subprocess.Popen:
        process = subprocess.Popen(["sleep", "120"])
        self.processes.append(process)
        (self.directory / str(process.pid)).touch()
        return process

    def kill(self, process: subprocess.Popen) -> None:
        process.kill()
        process.wait()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def workers(tmp_path):
    directory = tmp_path / "loaded"
    directory.mkdir()
    fake = FakeWorkers(directory)
    yield fake
    fake.close()


@pytest.fixture
def clock():
    return Clock()


def watch_for(workers: FakeWorkers, clock: Clock, count: int = 2, problems=list) -> ReadyWatch:
    return ReadyWatch(workers.directory, workers.directory.parent / "ready", count,
                      warn_after_s=120, problems=problems, clock=clock)


def test_mark_loaded_names_the_worker_only_under_serve(tmp_path, monkeypatch):
    monkeypatch.delenv(readiness.LOADED_DIR_ENV, raising=False)
    readiness.mark_loaded()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(readiness.LOADED_DIR_ENV, str(tmp_path))
    readiness.mark_loaded()
    assert [p.name for p in tmp_path.iterdir()] == [str(os.getpid())]


def test_a_zombie_or_a_reaped_process_is_not_alive():
    assert process_alive(os.getpid())
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    # Not waited for: once it exits it stays a zombie, as a dead MMS worker does until reaped.
    while process_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(f"/proc/{process.pid}").exists() and not process_alive(process.pid)
    process.wait()
    assert not process_alive(process.pid)


def test_markers_of_dead_workers_are_dropped(workers):
    first, second = workers.load(), workers.load()
    (workers.directory / "not-a-pid").touch()
    assert loaded_workers(workers.directory) == sorted([first.pid, second.pid])
    workers.kill(first)
    assert loaded_workers(workers.directory) == [second.pid]
    assert not (workers.directory / str(first.pid)).exists()


def test_ready_only_once_every_worker_has_loaded(workers, clock, caplog):
    caplog.set_level(logging.INFO, "dogbreed.serve")
    watch = watch_for(workers, clock)
    watch.poll()
    assert not watch.ready_file.exists()
    workers.load()
    clock.now += 3
    watch.poll()
    assert not watch.ready_file.exists() and "1/2 workers loaded" in caplog.text
    workers.load()
    clock.now += 4.3
    watch.poll()
    assert watch.ready_file.exists()
    assert "ready: 2/2 workers loaded in 7.3 s" in caplog.text


def test_after_start_up_ping_stays_ready_while_one_worker_has_the_model(workers, clock, caplog):
    caplog.set_level(logging.INFO, "dogbreed.serve")
    watch = watch_for(workers, clock)
    first, second = workers.load(), workers.load()
    watch.poll()
    assert watch.ready_file.exists()

    workers.kill(first)
    watch.poll()
    assert watch.ready_file.exists() and "1/2 workers have the model loaded" in caplog.text

    workers.kill(second)
    watch.poll()
    assert not watch.ready_file.exists() and "no worker has the model loaded (0/2)" in caplog.text

    workers.load()  # MMS restarted one and it has loaded the model again
    watch.poll()
    assert watch.ready_file.exists()
    workers.load()
    watch.poll()
    assert watch.ready_file.exists() and "2/2 workers have the model loaded" in caplog.text


def test_late_workers_are_reported_with_mms_error_lines(workers, clock, caplog):
    lines = ["2026-01-01 [ERROR] W-9000-model - Backend worker did not respond in given time"]
    watch = watch_for(workers, clock, problems=lambda: lines)
    workers.load()
    watch.poll()
    clock.now += 119
    watch.poll()
    assert "not ready" not in caplog.text
    clock.now += 2
    watch.poll()
    assert "not ready after 121 s: 1/2 workers have loaded the model" in caplog.text
    assert lines[0] in caplog.text
    assert not watch.ready_file.exists()
    # Said again after another period, not on every poll.
    caplog.clear()
    clock.now += 60
    watch.poll()
    assert "not ready" not in caplog.text
    clock.now += 61
    watch.poll()
    assert "not ready after 242 s" in caplog.text


def test_late_workers_without_errors_say_so(workers, clock, caplog):
    watch = watch_for(workers, clock, count=1)
    clock.now += 121
    watch.poll()
    assert "MMS has logged no error" in caplog.text


def test_run_polls_until_stopped_and_withdraw_answers_503(workers, clock):
    import threading

    watch = watch_for(workers, clock, count=1)
    stop = threading.Event()
    thread = threading.Thread(target=watch.run, args=(stop, 0.01))
    thread.start()
    workers.load()
    deadline = time.monotonic() + 30
    while not watch.ready_file.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(30)
    assert not thread.is_alive() and watch.ready_file.exists()
    watch.withdraw()
    assert not watch.ready_file.exists()
