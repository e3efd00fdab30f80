"""Process start-up helpers shared by the gateway and the worker."""

from __future__ import annotations

import asyncio
import gc
import math
import os
from pathlib import Path

# CPython collects its youngest generation every 700 container allocations. The
# send path allocates a few dozen per message, so that is hundreds of
# collections a second, and each promotes survivors toward the full
# collections that walk every socket's objects. Nearly all of a message's
# objects are freed by reference counting, not by the collector, so it can run
# far less often: the cyclic garbage it would have found earlier is bounded by
# the threshold.
_GC_THRESHOLDS = (50_000, 20, 20)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (it is not built for Windows), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def settle_gc() -> None:
    """Collect less often, and never again walk what start-up allocated (the
    modules, the app, the pools): call once the process is up and serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def usable_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), own_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The CPUs this process may run on: its affinity mask, lowered to the cgroup v2
    CPU quota (`cpu.max`) of its cgroup or any ancestor, rounded up; at least 1.

    `os.cpu_count()` is the host's count: a container limited to 2 CPUs on a
    64-CPU host sees 64 there.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limit = cpus or 1
    for quota in _cgroup_cpu_quotas(cgroup_root, own_cgroup):
        limit = min(limit, quota)
    return max(1, limit)


def _cgroup_cpu_quotas(cgroup_root: Path, own_cgroup: Path) -> list[int]:
    """The `cpu.max` quotas (in whole CPUs, rounded up) from the process's cgroup up to
    the root; none when cgroup v2 is not mounted there or sets no quota."""
    try:
        lines = own_cgroup.read_text().splitlines()
    except OSError:
        return []
    # cgroup v2 is the one line "0::<path>"; v1 hierarchies have other ids.
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None:
        return []
    quotas: list[int] = []
    folder = cgroup_root / relative.lstrip("/")
    while True:
        quota = _cpu_max(folder / "cpu.max")
        if quota is not None:
            quotas.append(quota)
        if folder == cgroup_root or cgroup_root not in folder.parents:
            return quotas
        folder = folder.parent


def _cpu_max(path: Path) -> int | None:
    """`cpu.max` holds "<quota> <period>" in microseconds, or "max <period>"."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))
