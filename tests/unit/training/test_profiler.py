"""The job's profile: system sampling, step timings, the operator profiler, reading it all back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest
import torch
import torchvision
from torch import nn

from dogbreed.cpus import usable_cpus
from dogbreed.profile_format import OPERATORS_FILE, STEPS_FILE, SYSTEM_FILE, Profile, StepTiming, load_profile
from dogbreed.training.profiler import OperatorProfiler, PhaseClock, StepRecorder, SystemMonitor, write_metadata


def burn(seconds: float) -> None:
    """Keep the cores busy in torch, which releases the GIL (a Python loop would starve the monitor's thread)."""
    a = torch.randn(256, 256)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)


def test_monitor_samples_the_host_and_stops_promptly(tmp_path):
    monitor = SystemMonitor(tmp_path, interval_s=0.05).start()
    burn(0.5)
    assert (tmp_path / SYSTEM_FILE).read_text().count("\n") >= 3  # on disk while running: a killed job keeps them
    begun = time.perf_counter()
    monitor.stop()
    assert time.perf_counter() - begun < 0.5
    assert not monitor.running

    samples = load_profile(tmp_path).samples
    assert len(samples) >= 3 and len(samples) == monitor.samples
    assert all(len(s.cpu_percent) == len(psutil.cpu_times(percpu=True)) for s in samples)
    assert all(0 <= c <= 100 for s in samples for c in s.cpu_percent)
    assert max(max(s.cpu_percent) for s in samples) > 50  # burn()'s cores
    assert all(b.timestamp < a.timestamp for b, a in zip(samples, samples[1:]))
    assert all(s.memory_used_bytes > 0 and 0 < s.memory_percent < 100 for s in samples)
    if not torch.cuda.is_available():
        assert all(s.gpu_percent is None and s.gpu_memory_used_bytes is None for s in samples)


def test_monitor_stop_does_not_wait_out_the_interval(tmp_path):
    with SystemMonitor(tmp_path, interval_s=60) as monitor:
        assert monitor.running
        begun = time.perf_counter()
    assert time.perf_counter() - begun < 1.0
    assert monitor.samples == 0 and not monitor.running


def fake_gpu(monkeypatch, utilization):
    """torch.cuda as a 1000-byte GPU with 250 bytes reserved and 100 allocated."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=1000))
    monkeypatch.setattr(torch.cuda, "utilization", utilization)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 250)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 100)


def test_monitor_samples_the_gpu_through_torch_cuda(tmp_path, monkeypatch):
    asked = []
    fake_gpu(monkeypatch, lambda device: asked.append(device) or 42)
    monitor = SystemMonitor(tmp_path, interval_s=0.02, device="cuda:0").start()
    time.sleep(0.2)
    monitor.stop()
    samples = load_profile(tmp_path).samples
    assert samples and asked[0] == torch.device("cuda", 0)
    assert {(s.gpu_percent, s.gpu_memory_used_bytes, s.gpu_memory_allocated_bytes, s.gpu_memory_percent)
            for s in samples} == {(42.0, 250, 100, 25.0)}


def test_monitor_keeps_gpu_memory_when_utilisation_is_unavailable(tmp_path, monkeypatch, caplog):
    def no_pynvml(device):
        raise ModuleNotFoundError("No module named 'pynvml'")

    fake_gpu(monkeypatch, no_pynvml)
    monitor = SystemMonitor(tmp_path, interval_s=0.02, device="cuda:0").start()
    time.sleep(0.2)
    monitor.stop()
    samples = load_profile(tmp_path).samples
    assert len(samples) >= 2
    assert all(s.gpu_percent is None and s.gpu_memory_percent == 25.0 for s in samples)
    assert sum("GPU utilisation is not sampled" in r.message for r in caplog.records) == 1


def test_monitor_that_cannot_start_only_warns(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monitor = SystemMonitor(blocker / "profile", interval_s=0.01).start()  # its parent is a file
    assert not monitor.running
    monitor.stop()
    assert any("system monitor not started" in r.message for r in caplog.records)


def timing(epoch: int, step: int, mode: str = "train") -> StepTiming:
    return StepTiming(epoch, step, mode, images=8, data_seconds=0.25, forward_backward_seconds=0.5,
                      optimizer_seconds=0.125, timestamp=1000.0 + step)


def test_step_timings_round_trip_and_survive_a_torn_last_line(tmp_path):
    with StepRecorder(tmp_path) as recorder:
        for step in range(3):
            recorder.record(timing(1, step))
        recorder.record(timing(1, 0, "eval"))
    with (tmp_path / STEPS_FILE).open("a") as file:
        file.write('{"epoch": 1, "step": 3, "mo')  # the job was killed mid-line
    with (tmp_path / SYSTEM_FILE).open("a") as file:
        file.write('{"timestamp": 1.0, "cpu_percent": [10.0]}\n{"timestamp": 2.0, "cpu_per')

    profile = load_profile(tmp_path)
    assert profile.steps == [timing(1, 0), timing(1, 1), timing(1, 2), timing(1, 0, "eval")]
    assert profile.steps[0].seconds == 0.875
    assert [s.timestamp for s in profile.samples] == [1.0]
    assert profile.skipped_lines == 2


def test_step_recorder_buffers_until_its_flush_interval(tmp_path):
    path = tmp_path / STEPS_FILE
    recorder = StepRecorder(tmp_path, flush_interval_s=3600)
    recorder.record(timing(0, 0))
    assert path.stat().st_size == 0  # still in the buffer: no write per step
    recorder.flush()
    assert len(path.read_text().splitlines()) == 1
    recorder.close()
    recorder.record(timing(0, 1))  # after close: ignored, not an error
    assert len(path.read_text().splitlines()) == 1

    eager = StepRecorder(tmp_path / "eager", flush_interval_s=0)
    eager.record(timing(0, 0))
    assert len((tmp_path / "eager" / STEPS_FILE).read_text().splitlines()) == 1
    eager.close()


def test_step_recorder_that_cannot_open_its_file_only_warns(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with StepRecorder(blocker / "profile") as recorder:  # its parent is a file
        recorder.record(timing(0, 0))
    assert any("step timings not recorded" in r.message for r in caplog.records)


def test_step_recorder_without_a_directory_records_nothing(tmp_path):
    with StepRecorder(None) as recorder:
        recorder.record(timing(0, 0))
        recorder.flush()
    assert recorder.path is None and list(tmp_path.iterdir()) == []


def test_phase_clock_laps():
    clock = PhaseClock()
    time.sleep(0.05)
    first = clock.lap()
    second = clock.lap()
    assert 0.05 <= first < 1.0
    assert second < 0.05
    time.sleep(0.05)
    clock.reset()
    assert clock.lap() < 0.05


@pytest.mark.parametrize("device, synchronize, calls", [("cuda", True, 1), ("cuda", False, 0), ("cpu", True, 0)])
def test_phase_clock_synchronises_only_on_cuda_and_when_asked(monkeypatch, device, synchronize, calls):
    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(device))
    PhaseClock(device, synchronize=synchronize).lap()
    assert len(synchronised) == calls


def train_steps(model: nn.Module, inputs: torch.Tensor, operators: OperatorProfiler, steps: int) -> None:
    """Forward, backward and an SGD step per training step, ``operators.step()`` after each."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    labels = torch.zeros(len(inputs), dtype=torch.long)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        operators.step()


def test_operator_profiler_traces_a_few_steps_then_costs_nothing(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    operators = OperatorProfiler(tmp_path / "trace", tmp_path / OPERATORS_FILE, wait=1, warmup=1, active=3,
                                 device="cpu").start()
    train_steps(model, torch.randn(2, 3, 64, 64), operators, steps=5)
    assert not operators.profiling and not torch._C._autograd._profiler_enabled()
    train_steps(model, torch.randn(2, 3, 64, 64), operators, steps=1)  # after the schedule: a no-op
    operators.close()

    traces = list((tmp_path / "trace").glob("*.pt.trace.json"))
    assert len(traces) == 1
    assert json.loads(traces[0].read_text())["traceEvents"]

    summary = load_profile(tmp_path).operators
    assert summary == operators.summary
    assert summary.steps == 3 and summary.device == "cpu" and summary.by_self_cuda == []
    ops = summary.by_self_cpu
    assert 5 <= len(ops) <= 20
    assert [o.self_ms for o in ops] == sorted((o.self_ms for o in ops), reverse=True)
    assert all(o.total_ms >= o.self_ms > 0 for o in ops)
    assert not any(o.name.startswith("ProfilerStep") for o in ops)
    assert 0 < sum(o.share_percent for o in ops) <= 100.01
    # resnet18 has 20 convolutions: 3 recorded steps of forward and backward each.
    forward = [o for o in ops if "convolution" in o.name and "backward" not in o.name]
    backward = [o for o in ops if o.name == "aten::convolution_backward"]
    assert forward and forward[0].calls == 60
    assert backward and backward[0].calls == 60


def test_operator_profiler_closed_early_writes_what_it_recorded(tmp_path):
    operators = OperatorProfiler(tmp_path / "trace", tmp_path / OPERATORS_FILE, wait=1, warmup=1, active=3,
                                 device="cpu").start()
    train_steps(nn.Linear(4, 3), torch.randn(2, 4), operators, steps=3)  # wait, warmup, 1 of 3 recorded
    operators.close()
    summary = load_profile(tmp_path).operators
    assert summary.steps == 1
    assert [o.calls for o in summary.by_self_cpu if o.name == "aten::addmm"] == [1]
    assert len(list((tmp_path / "trace").glob("*.pt.trace.json"))) == 1


def test_operator_profiler_failures_never_reach_the_loop(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = OperatorProfiler(tmp_path / "trace", blocker / OPERATORS_FILE, wait=0, warmup=1, active=1,
                                  device="cpu").start()
    train_steps(nn.Linear(4, 3), torch.randn(2, 4), unwritable, steps=2)
    unwritable.close()
    assert unwritable.summary is not None and not (blocker / OPERATORS_FILE).exists()
    assert any("operator summary not written" in r.message for r in caplog.records)

    stepping = OperatorProfiler(tmp_path / "trace2", tmp_path / "ops2.json", device="cpu").start()

    def broken_step():
        raise RuntimeError("kineto went away")

    monkeypatch.setattr(stepping._profiler, "step", broken_step)
    train_steps(nn.Linear(4, 3), torch.randn(2, 4), stepping, steps=2)
    assert not stepping.profiling and not torch._C._autograd._profiler_enabled()
    assert any("operator profiler stopped" in r.message for r in caplog.records)

    def no_profiler(**kwargs):
        raise RuntimeError("no kineto")

    monkeypatch.setattr(torch.profiler, "profile", no_profiler)
    unstarted = OperatorProfiler(tmp_path / "trace3", tmp_path / "ops3.json", device="cpu").start()
    train_steps(nn.Linear(4, 3), torch.randn(2, 4), unstarted, steps=2)
    unstarted.close()
    assert not unstarted.profiling and unstarted.summary is None
    assert any("operator profiler not started" in r.message for r in caplog.records)


# A few profiled CPU steps in a fresh process: kineto reads its log level once a process.
PROFILE_A_FEW_STEPS = """
import sys
from pathlib import Path
import torch
from dogbreed.training.profiler import OperatorProfiler
out = Path(sys.argv[1])
operators = OperatorProfiler(out / "trace", out / "operators.json", wait=0, warmup=1, active=2, device="cpu").start()
model = torch.nn.Linear(4, 3)
for _ in range(3):
    model(torch.randn(2, 4)).sum().backward()
    operators.step()
operators.close()
assert (out / "operators.json").is_file() and list((out / "trace").glob("*.pt.trace.json"))
"""
# What reads as a fault in a job's log: kineto's "ERROR: ... gpuGetDeviceCount failed" on a host
# without a GPU, its "USDT: ... profiler_start" markers, any warning.
NOISE = re.compile(r"error|usdt|warn", re.IGNORECASE)


def profile_in_a_fresh_process(tmp_path, **environ: str) -> str:
    """Run PROFILE_A_FEW_STEPS with no KINETO_LOG_LEVEL but ``environ``'s; its stderr."""
    env = {name: value for name, value in os.environ.items() if name != "KINETO_LOG_LEVEL"} | environ
    proc = subprocess.run([sys.executable, "-c", PROFILE_A_FEW_STEPS, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_operator_profiler_on_the_cpu_prints_no_noise(tmp_path):
    stderr = profile_in_a_fresh_process(tmp_path)
    assert not [line for line in stderr.splitlines() if NOISE.search(line)], stderr


def test_a_kineto_log_level_the_user_sets_stands(tmp_path):
    """Asked for kineto's default level (ERROR, 4), its USDT markers are back: what the first test checks is
    printed but for the level the profiler sets."""
    stderr = profile_in_a_fresh_process(tmp_path, KINETO_LOG_LEVEL="4")
    assert "USDT" in stderr and "profiler_start" in stderr, stderr


def test_metadata_round_trip_and_an_empty_profile(tmp_path):
    assert load_profile(tmp_path) == Profile(metadata=None, samples=[], steps=[], operators=None)
    written = write_metadata(tmp_path, num_workers=3, batch_size=16, cores=4, device=torch.device("cpu"))
    assert load_profile(tmp_path).metadata == written
    assert (written.num_workers, written.batch_size, written.cores, written.device) == (3, 16, 4, "cpu")
    assert write_metadata(tmp_path, num_workers=2, batch_size=8).cores == usable_cpus()


def test_unknown_fields_from_a_newer_writer_are_ignored(tmp_path):
    line = dict(vars(timing(0, 0)), queue_depth=4)
    (tmp_path / STEPS_FILE).write_text(json.dumps(line) + "\n")
    assert load_profile(tmp_path).steps == [timing(0, 0)]
