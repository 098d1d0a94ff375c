"""How many CPUs this process may use: the default of `--workers`.

`os.cpu_count()` is the machine's; a container is given fewer by its CPU affinity (cpuset) or,
more often, by a CFS quota (a pod's `limits.cpu`), which only the cgroup files tell:
cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD"), v1 `cpu.cfs_quota_us` and
`cpu.cfs_period_us` (-1: no quota). A quota on any ancestor cgroup limits too, so each level
from the process's cgroup up to the mount's root is read and the smallest quota wins. A quota of
1.5 CPUs gives 2 workers (rounded up: the half CPU is still there to use).

`root` is "/" except in tests, which lay the same files out under a temporary directory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit"]


def available_cpus(root: Path = Path("/")) -> int:
    """min(CPUs in this process's affinity, ceil(cgroup quota / period)), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def cgroup_cpu_limit(root: Path = Path("/")) -> float | None:
    """The CPU quota of this process's cgroup (v2, else v1) in CPUs; None without one."""
    memberships = _memberships(root / "proc/self/cgroup")
    if "" in memberships:  # cgroup v2: "0::/path"
        limit = _smallest(root / "sys/fs/cgroup", memberships[""], _v2_limit)
        if limit is not None:
            return limit
    for controllers, path in memberships.items():
        if "cpu" in controllers.split(","):
            for mount in (root / "sys/fs/cgroup" / controllers, root / "sys/fs/cgroup/cpu"):
                if mount.is_dir():
                    return _smallest(mount, path, _v1_limit)
    return None


def _memberships(path: Path) -> dict[str, str]:
    """/proc/self/cgroup lines "ID:CONTROLLERS:PATH" -> {CONTROLLERS: PATH}."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found[parts[1]] = parts[2]
    return found


def _smallest(
    mount: Path, path: str, read: Callable[[Path], float | None]
) -> float | None:
    """The smallest limit `read(dir)` gives along `path` and its ancestors under `mount`.

    Inside a container the cgroup namespace makes the process's own cgroup "/" (the mount's
    root); outside one, a path that does not exist under the mount is skipped.
    """
    limits: list[float] = []
    directory = mount / path.strip("/")
    while True:
        limit = read(directory)
        if limit is not None:
            limits.append(limit)
        if directory == mount:
            break
        directory = directory.parent
    return min(limits) if limits else None


def _v2_limit(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return _ratio(quota, period)


def _v1_limit(directory: Path) -> float | None:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:  # -1: no quota (v1)
        return None
    return q / p
