"""Shared helpers for the benchmark scripts: peak memory of a child process, medians, machine line."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()} ({os.cpu_count()} cores, {mem:.0f} GiB, {cpu}, Python {platform.python_version()})"


def run_child(code: str) -> dict:
    """Run `code` in a fresh Python; it must print one JSON line. Returns it plus wall time and peak RSS (MB)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.setdefault("wall_s", wall)
    return result


# ru_maxrss survives execve on Linux (a child spawned by a big parent reports the parent's peak); VmHWM is per
# address space, so a fresh interpreter reads its own peak.
PEAK_MB_SNIPPET = ("_peak = lambda: next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') "
                   "if l.startswith('VmHWM'))")


def median(xs):
    return statistics.median(xs)
