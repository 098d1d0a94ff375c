"""The default of `--workers`: the CPUs the process may use, from the cgroup files (v2
`cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`) laid out under tmp_path as under "/"."""

from __future__ import annotations

import os
from pathlib import Path

from httpscale.interceptor.workers.cpus import available_cpus, cgroup_cpu_limit

AFFINITY = len(os.sched_getaffinity(0))


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v2_quota_in_a_container_rounds_up(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup", "0::/\n")  # a cgroup namespace: the pod's is "/"
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(AFFINITY, 2)


def test_v2_the_smallest_quota_along_the_path_wins(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup", "0::/kubepods/pod1/c1\n")
    _write(tmp_path, "sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "max 100000\n")
    _write(tmp_path, "sys/fs/cgroup/kubepods/pod1/cpu.max", "300000 100000\n")
    _write(tmp_path, "sys/fs/cgroup/kubepods/cpu.max", "50000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    assert available_cpus(tmp_path) == 1  # half a CPU is still one worker


def test_v2_without_a_quota_the_affinity_counts(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup", "0::/user.slice\n")
    _write(tmp_path, "sys/fs/cgroup/user.slice/cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cpus(tmp_path) == AFFINITY


def test_v1_quota(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup",
           "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    _write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n")
    _write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.5
    assert available_cpus(tmp_path) == min(AFFINITY, 3)


def test_v1_no_quota_is_minus_one(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup", "2:cpu:/\n")
    _write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
    _write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_unreadable_or_garbled_files_mean_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None  # no /proc/self/cgroup at all
    _write(tmp_path, "proc/self/cgroup", "0::/\n")
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "lots\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cpus(tmp_path) == AFFINITY

