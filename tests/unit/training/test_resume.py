"""A job stopped by SIGTERM anywhere and restarted ends exactly as the uninterrupted job."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import dogbreed.training.loop as loop
from dogbreed.training.checkpoints import CHECKPOINT_FILE
from dogbreed.training.failure import EXIT_SIGTERM
from dogbreed.training.job import main
from tests.unit.training.conftest import fast_args

# 24 training images in batches of 4: 6 batches an epoch. layer4 and its BatchNorms
# train too, and a cosine schedule moves the learning rate every epoch.
ARGS = ("--epochs", "3", "--patience", "0", "--batch_size", "4", "--freeze", "layer3", "--lr_scheduler", "cosine",
        "--lr", "0.01")
TIMINGS = ("images_per_sec", "epoch_seconds")
REAL_BATCHES = loop.batches


def job_args(root: Path) -> list[str]:
    """This run's model, output and checkpoint folders under ``root``; the channels are shared."""
    return fast_args(*ARGS, "--model-dir", str(root / "model"), "--output-data-dir", str(root / "data"),
                     "--checkpoint-dir", str(root / "checkpoints"))


def sigterm_at(monkeypatch, desc: str, nth: int) -> None:
    """Send this process SIGTERM when the ``nth`` batch of a ``desc`` pass (train/valid/test) arrives."""
    seen = {"count": 0}

    def batches(loader, split, stop, this_desc):
        for batch in REAL_BATCHES(loader, split, stop, this_desc):
            if this_desc == desc:
                seen["count"] += 1
                if seen["count"] == nth:
                    os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    monkeypatch.setattr(loop, "batches", batches)


def metric_lines(text: str) -> list[str]:
    """The metric lines of a log, less the timings (no two runs share those)."""
    lines = re.findall(r"^.*?((?:epoch|test_loss)=.*)$", text, re.MULTILINE)
    return [re.sub(rf" ({'|'.join(TIMINGS)})=\S+", "", line) for line in lines]


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMINGS} for h in history]


def test_stopped_mid_epoch_in_validation_and_in_the_test_pass_ends_bit_identical(opt_ml, tmp_path, capsys,
                                                                                 monkeypatch):
    straight = tmp_path / "straight"
    assert main(job_args(straight)) == 0
    expected_log = capsys.readouterr().out

    stopped, logs = tmp_path / "stopped", []
    for desc, nth, where in [
        ("train", 9, "during epoch 2"),  # the 3rd of epoch 2's 6 batches
        ("valid", 1, "during epoch 2"),  # epoch 2 trained, its validation stopped
        ("train", 4, "during epoch 3"),
        ("test", 1, "during the test pass"),
    ]:
        sigterm_at(monkeypatch, desc, nth)
        assert main(job_args(stopped)) == EXIT_SIGTERM
        out = capsys.readouterr().out
        assert f"SIGTERM: stopped {where}" in out, out[-3000:]
        logs.append(out)
    monkeypatch.setattr(loop, "batches", REAL_BATCHES)
    assert main(job_args(stopped)) == 0
    logs.append(capsys.readouterr().out)
    assert "resuming from" in logs[1] and "in epoch 2, at its validation" in logs[2]

    # The model is the very same, tensor for tensor.
    ours = torch.load(stopped / "model" / "model.pt", weights_only=True)
    theirs = torch.load(straight / "model" / "model.pt", weights_only=True)
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    assert (stopped / "model" / "model.onnx").exists()

    # The same metric lines, each once, across the five runs; the same metrics.json.
    assert metric_lines("".join(logs)) == metric_lines(expected_log)
    assert len(metric_lines(expected_log)) == 4  # three epochs and the test line
    got = json.loads((stopped / "data" / "metrics.json").read_text())
    want = json.loads((straight / "data" / "metrics.json").read_text())
    assert without_timings(got["history"]) == without_timings(want["history"])
    assert got["final"] == want["final"] and got["unreadable"] == want["unreadable"]


def test_a_kill_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path):
    """SIGKILL in the middle of ``torch.save``: the old checkpoint stays whole and loadable."""
    directory = tmp_path / "checkpoints"
    script = textwrap.dedent(f"""
        import sys, time, torch
        from pathlib import Path
        from dogbreed.training.checkpoints import write_atomically

        directory = Path({str(directory)!r})
        write_atomically(directory, {{"format_version": 2, "generation": 1, "weights": torch.ones(1000)}})
        real_save = torch.save

        def slow_save(obj, f):
            real_save(obj, f)  # the whole file is written, but not yet renamed into place
            f.flush()
            print("writing", flush=True)
            time.sleep(600)

        torch.save = slow_save
        write_atomically(directory, {{"format_version": 2, "generation": 2, "weights": torch.zeros(1000)}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert list(directory.glob(".checkpoint-*.tmp")), "the new checkpoint is being written beside the old"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    saved = torch.load(directory / CHECKPOINT_FILE, weights_only=True)
    assert saved["generation"] == 1 and torch.equal(saved["weights"], torch.ones(1000))


def test_sigterm_in_a_real_process_saves_a_checkpoint_and_exits_143(opt_ml):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dogbreed.training", *fast_args("--epochs", "50", "--batch_size", "2", "--patience", "0")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "epoch 2/50" in line:
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == EXIT_SIGTERM, out
    assert "SIGTERM: stopped during epoch" in out and "checkpoint saved" in out and "Traceback" not in out
    assert not (opt_ml / "output" / "failure").exists()
    saved = torch.load(opt_ml / "checkpoints" / CHECKPOINT_FILE, weights_only=True)
    assert saved["state"]["epoch"] >= 1
    assert saved["state"]["partial"] is not None and saved["state"]["partial"]["epoch"] >= 2


@pytest.mark.parametrize("how", ["killed", "stuck"])
def test_a_dead_or_stuck_loader_worker_fails_the_job_in_bounded_time(opt_ml, how):
    """SIGKILL or SIGSTOP one DataLoader worker: exit 1 and a one-line reason, never a hang."""
    import psutil

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Slow batches (batch_size 1) so the workers are busy when one is hit; features off, so
    # the image loader's workers run in every epoch.
    args = fast_args("--epochs", "50", "--batch_size", "1", "--patience", "0", "--num_workers", "2",
                     "--loader_timeout", "10", "--features", "off")
    proc = subprocess.Popen([sys.executable, "-m", "dogbreed.training", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "epoch=1 " in line:
                break
        workers = psutil.Process(proc.pid).children()
        assert len(workers) >= 2, "".join(lines)
        victim = workers[0]
        os.kill(victim.pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        started = time.monotonic()
        rest, _ = proc.communicate(timeout=90)
        elapsed = time.monotonic() - started
        # The job killed its workers, the stopped one too, before it exited.
        assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE
    finally:
        proc.kill()
        for child in workers if "workers" in locals() else []:
            if child.is_running():
                child.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 1, out[-3000:]
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason.count("\n") == 1, reason
    if how == "killed":
        assert "data loading failed" in reason and str(victim.pid) in reason, reason
    else:
        assert "data loading stalled" in reason and "loader_timeout" in reason, reason
        assert elapsed >= 9, "failed before the timeout"
