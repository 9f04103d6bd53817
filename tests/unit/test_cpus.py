"""usable_cpus: the affinity mask, capped by a cgroup v2 quota read from a cpu.max file, or by a
cgroup v1 CFS quota where there is no cpu.max."""

from __future__ import annotations

import logging
import os

import pytest

from dogbreed.cpus import cgroup_cpu_quota, cgroup_v1_cpu_quota, usable_cpus


@pytest.mark.parametrize("text, cpus", [
    ("max 100000\n", None),
    ("100000 100000\n", 1),
    ("150000 100000\n", 2),  # --cpus 1.5: rounded up
    ("50000 100000\n", 1),  # half a CPU still runs one thread
    ("400000 100000\n", 4),
])
def test_the_quota_in_whole_cpus(tmp_path, text, cpus):
    (tmp_path / "cpu.max").write_text(text)
    assert cgroup_cpu_quota(tmp_path / "cpu.max") == cpus


def test_no_cpu_max_file_is_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "absent") is None


@pytest.mark.parametrize("text", ["", "lots 100000", "100000", "100000 0", "-1 100000"])
def test_a_garbled_cpu_max_is_logged_and_ignored(tmp_path, caplog, text):
    (tmp_path / "cpu.max").write_text(text)
    with caplog.at_level(logging.WARNING, logger="dogbreed.cpus"):
        assert cgroup_cpu_quota(tmp_path / "cpu.max") is None
    assert "ignoring the CPU quota" in caplog.text and "cpu.max" in caplog.text


def test_an_unreadable_cpu_max_is_logged_and_ignored(tmp_path, caplog):
    (tmp_path / "cpu.max").mkdir()  # reading a directory raises IsADirectoryError, an OSError
    with caplog.at_level(logging.WARNING, logger="dogbreed.cpus"):
        assert cgroup_cpu_quota(tmp_path / "cpu.max") is None
    assert "cannot read" in caplog.text


def test_the_quota_caps_the_affinity_mask(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert usable_cpus(cpu_max, tmp_path / "no-v1") == 2
    cpu_max.write_text("800000 100000\n")  # a quota above the CPU set does not add CPUs
    assert usable_cpus(cpu_max, tmp_path / "no-v1") == 4
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max, tmp_path / "no-v1") == 4
    assert usable_cpus(tmp_path / "absent", tmp_path / "no-v1") == 4


def test_without_an_affinity_mask_the_host_count(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert usable_cpus(tmp_path / "absent", tmp_path / "no-v1") == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable"
    assert usable_cpus(tmp_path / "absent", tmp_path / "no-v1") == 1


def v1_dir(tmp_path, quota: str, period: str = "100000"):
    directory = tmp_path / "cpu"
    directory.mkdir(exist_ok=True)
    (directory / "cpu.cfs_quota_us").write_text(quota + "\n")
    (directory / "cpu.cfs_period_us").write_text(period + "\n")
    return directory


@pytest.mark.parametrize("quota, cpus", [("-1", None), ("100000", 1), ("150000", 2), ("400000", 4)])
def test_a_cgroup_v1_quota_in_whole_cpus(tmp_path, quota, cpus):
    assert cgroup_v1_cpu_quota(v1_dir(tmp_path, quota)) == cpus


def test_a_garbled_cgroup_v1_quota_is_logged_and_ignored(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dogbreed.cpus"):
        assert cgroup_v1_cpu_quota(v1_dir(tmp_path, "lots")) is None
    assert "ignoring the CPU quota" in caplog.text and "cpu" in caplog.text
    assert cgroup_v1_cpu_quota(tmp_path / "absent") is None


def test_without_cpu_max_the_cgroup_v1_quota_caps_the_mask(tmp_path, monkeypatch):
    """docker run --cpus 1 on a cgroup v1 host: no cpu.max, a CFS quota of one CPU."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert usable_cpus(tmp_path / "absent", v1_dir(tmp_path, "100000")) == 1
    cpu_max = tmp_path / "cpu.max"  # where both exist, cgroup v2's file is the one in force
    cpu_max.write_text("300000 100000\n")
    assert usable_cpus(cpu_max, v1_dir(tmp_path, "100000")) == 3
