"""What the CPU offers the engine: physical cores (for intra-op threads) and int8 dot-product support.

Both are read from Linux's ``/sys`` and ``/proc`` (with fallbacks elsewhere), once per process.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["cpu_has_vnni", "cpu_name", "physical_cores"]


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may run on: hyper-threads of one core count once, CPUs outside
    the affinity mask and a cgroup CPU quota (containers) are respected; at least 1.

    ONNX Runtime's intra-op threads default to this: a second hyper-thread on a core that is
    already busy with a convolution adds contention, not throughput.
    """
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = list(range(os.cpu_count() or 1))
    cores: set[str] = set()
    for cpu in allowed:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:  # no topology information: count logical CPUs
            cores = {str(c) for c in allowed}
            break
    count = len(cores)
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, int(quota)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    """CPUs granted by a cgroup v2 ``cpu.max`` quota (``"200000 100000"`` = 2.0), None if unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_vnni() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX).

    Without them ONNX Runtime's u8s8 kernels use VPMADDUBSW, whose 16-bit intermediate sums can
    saturate; weights quantized to 7 bits (``reduce_range``) avoid that (see ``_int8.py``).
    """
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for messages and reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
