"""Bottleneck verdicts, each both ways, over synthetic profiles."""

from __future__ import annotations

import numpy as np
import pytest

from dogbreed.report.bottlenecks import (
    NO_GPU, BottleneckVerdict, Rules, StepOutlierRule, allowed_outliers, evaluate_bottlenecks, scaled_patience,
    scaled_window, windows,
)
from dogbreed.profile_format import Profile, ProfileMetadata, StepTiming, SystemSample, load_profile
from dogbreed.training.profiler import StepRecorder, write_metadata

GPU_CHECKS = ["CPUBottleneck", "IOBottleneck", "LowGPUUtilization", "BatchSize"]


def at(value, i: int):
    """A per-sample value: a list is indexed, anything else is the same for every sample."""
    return value[i] if isinstance(value, list) else value


def system(n: int = 400, cpu=50.0, gpu=80.0, iowait=0.0, gpu_memory=50.0) -> list[SystemSample]:
    """``n`` samples 0.5 s apart on a 4-core host."""
    return [SystemSample(timestamp=i * 0.5, cpu_percent=[at(cpu, i)] * 4, cpu_iowait_percent=at(iowait, i),
                         memory_used_bytes=1 << 30, memory_percent=10.0, gpu_percent=at(gpu, i),
                         gpu_memory_percent=at(gpu_memory, i)) for i in range(n)]


def steps(n: int = 100, step_seconds=0.1, data_share: float = 0.05, epochs: int = 1,
          mode: str = "train") -> list[StepTiming]:
    """``n`` steps per epoch lasting ``step_seconds``, ``data_share`` of it waiting for data."""
    out = []
    for epoch in range(epochs):
        for i in range(n):
            seconds = at(step_seconds, epoch * n + i)
            data = seconds * data_share
            out.append(StepTiming(epoch, i, mode, 32, data, (seconds - data) * 0.75, (seconds - data) * 0.25,
                                  timestamp=float(epoch * n + i)))
    return out


def profile(samples=(), timings=(), workers: int = 4, cores: int = 4, metadata: bool = True) -> Profile:
    meta = ProfileMetadata(num_workers=workers, batch_size=32, cores=cores, device="cuda") if metadata else None
    return Profile(metadata=meta, samples=list(samples), steps=list(timings))


def verdict(p: Profile, name: str, has_gpu: bool = True, rules: Rules | None = None) -> BottleneckVerdict:
    found = [v for v in evaluate_bottlenecks(p, has_gpu, rules) if v.name == name]
    assert len(found) == 1
    return found[0]


def test_every_check_comes_back_in_order():
    names = [v.name for v in evaluate_bottlenecks(profile(system(), steps()), has_gpu=True)]
    assert names == GPU_CHECKS + ["Dataloader", "DataWait", "StepOutlier"]


@pytest.mark.parametrize("name, values", [
    ("CPUBottleneck", dict(cpu=95.0, gpu=5.0)), ("IOBottleneck", dict(iowait=60.0, gpu=5.0)),
    ("LowGPUUtilization", dict(gpu=5.0)), ("BatchSize", dict(cpu=30.0, gpu=5.0, gpu_memory=5.0)),
])
def test_gpu_checks_are_not_evaluated_without_a_gpu(name, values):
    firing = profile(system(**values), steps())
    assert verdict(firing, name, has_gpu=True).triggered  # the data would fire it...
    result = verdict(firing, name, has_gpu=False)  # ...but there is no GPU
    assert (result.evaluated, result.triggered, result.finding) == (False, False, NO_GPU)
    assert verdict(firing, "DataWait", has_gpu=False).evaluated


def test_gpu_checks_are_not_evaluated_when_utilisation_was_not_recorded():
    unrecorded = profile(system(gpu=None, gpu_memory=None), steps())
    for name in GPU_CHECKS:
        result = verdict(unrecorded, name)
        assert not result.evaluated and "not recorded" in result.finding


def test_gpu_checks_are_not_evaluated_on_too_few_samples():
    result = verdict(profile(system(n=15, cpu=95.0, gpu=5.0)), "CPUBottleneck")
    assert not result.evaluated and "too few" in result.finding


@pytest.mark.parametrize("cpu, gpu, fires", [(95.0, 5.0, True), (95.0, 50.0, False), (60.0, 5.0, False)])
def test_cpu_bottleneck(cpu, gpu, fires):
    result = verdict(profile(system(cpu=cpu, gpu=gpu)), "CPUBottleneck")
    assert result.evaluated and result.triggered is fires
    assert ("cannot feed the GPU" in result.advice) is fires


@pytest.mark.parametrize("bottlenecked, fires", [(0.6, True), (0.4, False)])
def test_cpu_bottleneck_fires_above_half_of_the_samples(bottlenecked, fires):
    n = 400
    gpu = [5.0 if (i % 10) < bottlenecked * 10 else 80.0 for i in range(n)]
    result = verdict(profile(system(n=n, cpu=95.0, gpu=gpu)), "CPUBottleneck")
    assert result.triggered is fires
    assert f"in {bottlenecked * 100:.0f}% of 360 samples" in result.finding  # the first tenth skipped


@pytest.mark.parametrize("iowait, gpu, fires", [(60.0, 5.0, True), (10.0, 5.0, False), (60.0, 50.0, False)])
def test_io_bottleneck(iowait, gpu, fires):
    result = verdict(profile(system(iowait=iowait, gpu=gpu)), "IOBottleneck")
    assert result.evaluated and result.triggered is fires


def test_io_bottleneck_needs_io_wait():
    result = verdict(profile(system(iowait=None, gpu=5.0)), "IOBottleneck")
    assert not result.evaluated and "I/O wait was not recorded" in result.finding


def test_low_gpu_utilization_under_used():
    result = verdict(profile(system(gpu=30.0)), "LowGPUUtilization")
    assert result.triggered and "raise batch_size (now 32)" in result.advice
    assert "idles between bursts" not in result.advice


def test_low_gpu_utilization_fluctuating():
    result = verdict(profile(system(gpu=[95.0 if i % 2 else 0.0 for i in range(400)])), "LowGPUUtilization")
    assert result.triggered and "idles between bursts" in result.advice
    assert "raise batch_size" not in result.advice


def test_low_gpu_utilization_busy_gpu_and_the_idle_start_skipped():
    busy = verdict(profile(system(gpu=[85.0 + i % 10 for i in range(400)])), "LowGPUUtilization")
    assert busy.evaluated and not busy.triggered
    # The first tenth idles (start-up); patience skips it, so it is not "fluctuating".
    start = verdict(profile(system(gpu=[0.0] * 40 + [90.0] * 360)), "LowGPUUtilization")
    assert start.evaluated and not start.triggered
    later = verdict(profile(system(gpu=[90.0] * 40 + [0.0] * 40 + [90.0] * 320)), "LowGPUUtilization")
    assert later.triggered


@pytest.mark.parametrize("cpu, gpu, gpu_memory, fires", [
    (30.0, 40.0, 20.0, True), (30.0, 40.0, 80.0, False), (30.0, 90.0, 20.0, False), (90.0, 40.0, 20.0, False),
])
def test_batch_size(cpu, gpu, gpu_memory, fires):
    result = verdict(profile(system(cpu=cpu, gpu=gpu, gpu_memory=gpu_memory)), "BatchSize")
    assert result.evaluated and result.triggered is fires
    assert ("raise batch_size (now 32)" in result.advice) is fires


def test_batch_size_needs_gpu_memory():
    assert not verdict(profile(system(gpu=40.0, gpu_memory=None)), "BatchSize").evaluated


@pytest.mark.parametrize("workers, cores, data_share, fires", [
    (1, 8, 0.7, True),  # too few workers, and training waits for them
    (1, 8, 0.05, False),  # too few by SageMaker's measure, but the loader keeps up
    (32, 8, 0.05, True),  # oversubscribed whatever the wait
    (8, 8, 0.7, False),  # enough workers: the wait is DataWait's business
    (6, 8, 0.7, False),  # 75%: within 70-200%
])
def test_dataloader(workers, cores, data_share, fires):
    result = verdict(profile(system(), steps(data_share=data_share), workers=workers, cores=cores), "Dataloader")
    assert result.evaluated and result.triggered is fires


def test_dataloader_without_step_timings_judges_the_worker_count_alone():
    result = verdict(profile(system(), [], workers=0, cores=2), "Dataloader")
    assert result.triggered and "at least 2" in result.advice
    assert not verdict(profile(system(), [], metadata=False), "Dataloader").evaluated


@pytest.mark.parametrize("data_share, fires", [(0.7, True), (0.05, False)])
def test_data_wait(data_share, fires):
    result = verdict(profile(timings=steps(data_share=data_share), workers=1, cores=8), "DataWait", has_gpu=False)
    assert result.evaluated and result.triggered is fires
    assert f"{data_share * 100:.0f}% of its step time over 99 steps" in result.finding
    assert ("raise num_workers (now 1 for 8 cores)" in result.advice) is fires


def test_data_wait_with_every_core_a_worker_advises_less_work_per_image():
    result = verdict(profile(timings=steps(data_share=0.7), workers=8, cores=8), "DataWait")
    assert result.triggered and "pre-resize" in result.advice


def test_data_wait_leaves_out_each_pass_first_step():
    timings = steps(data_share=0.05, epochs=3)
    for t in timings:
        if t.step == 0:  # workers starting: 100 s of waiting
            t.data_seconds = 100.0
    assert not verdict(profile(timings=timings), "DataWait").triggered
    # The same long wait mid-epoch counts.
    timings[50].data_seconds = 100.0
    assert verdict(profile(timings=timings), "DataWait").triggered


def test_data_wait_leaves_out_the_first_step_after_a_resume():
    before, after = steps(data_share=0.05)[:60], steps(data_share=0.05)[40:]  # stopped at 59, resumed at 40
    after[0].data_seconds = 100.0  # the resumed job's workers starting
    assert not verdict(profile(timings=before + after), "DataWait").triggered
    after[1].data_seconds = 100.0
    assert verdict(profile(timings=before + after), "DataWait").triggered


def test_data_wait_needs_training_steps():
    assert not verdict(profile(timings=steps(n=5)), "DataWait").evaluated
    assert not verdict(profile(timings=steps(mode="eval")), "DataWait").evaluated


def noisy(n: int, seconds: float = 0.1, seed: int = 0) -> list[float]:
    return list(seconds + np.random.default_rng(seed).uniform(-0.01, 0.01, n))


def test_step_outlier_fires_on_outliers():
    durations = noisy(200)
    for i in (20, 60, 100, 140, 180):
        durations[i] = 2.0
    result = verdict(profile(timings=steps(n=200, step_seconds=durations)), "StepOutlier")
    assert result.triggered and result.finding.startswith("train: 5 of 199 steps") and "2 allowed" in result.finding


def test_step_outlier_quiet_without_outliers_or_with_slow_first_steps():
    assert not verdict(profile(timings=steps(n=200, step_seconds=noisy(200))), "StepOutlier").triggered
    durations = noisy(500)
    for epoch in range(5):
        durations[epoch * 100] = 5.0  # each epoch's first step
    result = verdict(profile(timings=steps(n=100, step_seconds=durations, epochs=5)), "StepOutlier")
    assert result.evaluated and not result.triggered


def test_step_outlier_judges_modes_apart():
    timings = steps(n=200, step_seconds=noisy(200)) + steps(n=12, step_seconds=1.0, mode="eval")
    result = verdict(profile(timings=timings), "StepOutlier")
    assert result.evaluated and not result.triggered  # eval steps are long, but all alike
    assert "eval: 0 of 11 steps" in result.finding
    train_rule = Rules(step_outlier=StepOutlierRule(mode="train"))
    only_train = verdict(profile(timings=timings), "StepOutlier", rules=train_rule)
    assert "eval" not in only_train.finding and only_train.finding.startswith("train:")


def test_step_outlier_needs_steps():
    assert not verdict(profile(timings=steps(n=5)), "StepOutlier").evaluated


def test_sagemaker_counts_scale_down_to_short_jobs():
    assert (scaled_patience(1000, 20_000), scaled_window(500, 20_000)) == (1000, 500)  # long jobs: SageMaker's
    assert (scaled_patience(1000, 400), scaled_window(500, 360)) == (40, 90)
    assert scaled_window(500, 40) == 20
    assert [allowed_outliers(10, n) for n in (5, 200, 5000)] == [1, 2, 10]
    assert windows(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert windows(list(range(3)), 4) == [[0, 1, 2]]


def test_a_failing_check_does_not_lose_the_others():
    broken = steps()
    broken[10].data_seconds = None  # not a number: DataWait's sum fails
    results = {v.name: v for v in evaluate_bottlenecks(profile(system(cpu=95.0, gpu=5.0), broken), has_gpu=True)}
    assert not results["DataWait"].evaluated and "the check failed (TypeError" in results["DataWait"].finding
    assert results["CPUBottleneck"].triggered


def test_verdicts_from_files_the_recorder_wrote(tmp_path):
    write_metadata(tmp_path, num_workers=1, batch_size=32, cores=8)
    with StepRecorder(tmp_path) as recorder:
        for timing in steps(data_share=0.7):
            recorder.record(timing)
    results = {v.name: v for v in evaluate_bottlenecks(load_profile(tmp_path), has_gpu=False)}
    assert results["DataWait"].triggered and results["Dataloader"].triggered
    assert not results["CPUBottleneck"].evaluated
