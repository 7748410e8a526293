"""This machine for the table measurements: how busy it is (a shared machine skews a table), the CPU
time of a trial's process tree, and the hardware description of a table's sidecar."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def cpu_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores, from /proc/stat)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def become_subreaper() -> None:
    """Adopt orphaned descendants (e.g. Inductor compile workers) so their CPU time is counted."""
    import ctypes

    pr_set_child_subreaper = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reap_orphans() -> None:
    """Reap adopted descendants that have exited, adding their CPU time to RUSAGE_CHILDREN."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def children_cpu_seconds() -> float:
    """CPU seconds used by this process's reaped children."""
    import resource

    reap_orphans()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_idle(max_wait_s: float, busy_cores: float = 0.5, window_s: float = 1.0) -> bool:
    """Wait until other processes use under ``busy_cores`` cores (measured over ``window_s``).

    The machine may be shared; starting a trial while it is busy skews the table. Returns False when
    the machine was still busy after ``max_wait_s``.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        before = cpu_busy_seconds()
        time.sleep(window_s)
        if (cpu_busy_seconds() - before) / window_s < busy_cores:
            return True
        if time.monotonic() > deadline:
            return False


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 instructions (avx512_bf16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _mem_gb() -> int:
    """Physical memory in GiB, rounded."""
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)


def hardware_info() -> dict[str, Any]:
    """The machine part of the sidecar JSON."""
    return {
        "kind": "cpu",
        "cores": os.cpu_count() or 1,
        "mem_gb": _mem_gb(),
        "bf16": _cpu_has_bf16(),
        "cpu_model": _cpu_model(),
    }
