"""Which MMS workers have loaded the model, and the ready file behind ``/ping``.

multi-model-server 1.1.11 cannot tell: its management API calls a worker ``READY`` from
the moment its thread exists (``DescribeModelResponse`` reports ``WorkerThread.isRunning``,
which starts out true), and its ``/ping`` says ``Healthy`` once worker threads exist, both
before any worker has loaded the model. So each worker says it itself: once the handler
service has loaded the model, :func:`mark_loaded` leaves a file named by the worker's pid
in the directory ``serve`` passes in :data:`LOADED_DIR_ENV`, and ``serve`` counts the
markers whose process is still alive (:func:`loaded_workers`).

:class:`ReadyWatch` turns that count into the ready file nginx checks
(:mod:`dogbreed.serving.front`):

* at start-up the file appears only once every configured worker has loaded the model
  (``ready: 2/2 workers loaded in 7.3 s``); until then ``/ping`` answers 503, and a
  warning with MMS's latest error lines is logged every ``warn_after_s`` while it waits;
* afterwards a worker that dies (MMS starts a new one, which loads the model again)
  leaves ``/ping`` at 200 while at least one worker still has the model, since requests
  are then served, only with less concurrency; each change is logged. With none left
  the file goes and ``/ping`` answers 503 until a worker has loaded the model again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("dogbreed.serve")

# Set by `serve` for MMS only, so the model check in `serve` itself leaves no marker.
LOADED_DIR_ENV = "DOGBREED_LOADED_WORKERS_DIR"


def mark_loaded() -> None:
    """In an MMS worker, record that this process has loaded the model; else do nothing."""
    directory = os.environ.get(LOADED_DIR_ENV)
    if directory:
        Path(directory, str(os.getpid())).touch()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (a dead worker MMS has not reaped yet) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def loaded_workers(directory: Path) -> list[int]:
    """The pids of live workers that have loaded the model; markers of dead ones are removed."""
    pids = []
    for marker in directory.iterdir():
        if not marker.name.isdigit():
            continue
        if process_alive(int(marker.name)):
            pids.append(int(marker.name))
        else:
            marker.unlink(missing_ok=True)
    return sorted(pids)


@dataclass
class ReadyWatch:
    """Keeps ``ready_file`` present exactly when ``/ping`` should answer 200 (see the module doc).

    ``problems`` returns MMS's latest error lines, quoted while the workers are late.
    """

    loaded_dir: Path
    ready_file: Path
    workers: int
    warn_after_s: float
    problems: Callable[[], list[str]] = list
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    ready_once: bool = field(default=False, init=False)
    loaded: int = field(default=0, init=False)
    next_warning: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.next_warning = self.started + self.warn_after_s

    def poll(self) -> None:
        """Count the loaded workers once and update the ready file and the log."""
        pids = loaded_workers(self.loaded_dir)
        count, before = len(pids), self.loaded
        self.loaded = count
        if not self.ready_once:
            if count >= self.workers:
                self.ready_once = True
                self._set_ready(True)
                logger.info("ready: %d/%d workers loaded in %.1f s", count, self.workers, self.clock() - self.started)
            elif count != before:
                logger.info("%d/%d workers loaded", count, self.workers)
            elif self.clock() >= self.next_warning:
                self.next_warning += self.warn_after_s
                self._warn_late(count)
            return
        if count == before:
            return
        if count == 0:
            self._set_ready(False)
            logger.error(
                "no worker has the model loaded (0/%d): /ping answers 503 until MMS has "
                "restarted one and it has loaded the model",
                self.workers,
            )
        else:
            self._set_ready(True)
            complete = count >= self.workers
            logger.log(
                logging.INFO if complete else logging.WARNING,
                "%d/%d workers have the model loaded%s",
                count,
                self.workers,
                "" if complete else "; MMS restarts the others, /ping stays 200",
            )

    def run(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """Poll every ``interval_s`` until ``stop`` is set; a failing poll is logged, not fatal."""
        while not stop.is_set():
            try:
                self.poll()
            except OSError as exc:
                logger.error("could not count the loaded workers in %s: %s", self.loaded_dir, exc)
            stop.wait(interval_s)

    def withdraw(self) -> None:
        """Answer 503 from now on (the server is stopping)."""
        self._set_ready(False)

    def _set_ready(self, ready: bool) -> None:
        if ready:
            self.ready_file.touch()
        else:
            self.ready_file.unlink(missing_ok=True)

    def _warn_late(self, count: int) -> None:
        lines = self.problems()
        logger.warning(
            "not ready after %.0f s: %d/%d workers have loaded the model; /ping answers 503 until all have. %s",
            self.clock() - self.started,
            count,
            self.workers,
            "MMS's latest error lines:\n  " + "\n  ".join(lines)
            if lines
            else "MMS has logged no error; a worker may still be loading (a slow model_fn?).",
        )
