"""usable_cpus: the affinity mask, capped by a cgroup v2 quota read from a cpu.max file."""

from __future__ import annotations

import logging
import os

import pytest

from dogbreed.cpus import cgroup_cpu_quota, usable_cpus


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
    assert usable_cpus(cpu_max) == 2
    cpu_max.write_text("800000 100000\n")  # a quota above the CPU set does not add CPUs
    assert usable_cpus(cpu_max) == 4
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == 4
    assert usable_cpus(tmp_path / "absent") == 4


def test_without_an_affinity_mask_the_host_count(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert usable_cpus(tmp_path / "absent") == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable"
    assert usable_cpus(tmp_path / "absent") == 1
