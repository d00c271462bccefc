"""Where a job's time and memory go: named stages, each with its wall time, CPU time (this process's and its
joined worker processes') and peak resident memory (this process's), for reports and benchmarks
(`with stages.stage("calibrate"): ...`; `stages.report()`).

Peak memory is sampled from /proc/self/statm by a daemon thread every 20 ms while a stage runs (the process's
lifetime peak, ru_maxrss, cannot tell stages apart); on systems without /proc it is the lifetime peak.
Nested or repeated stages of the same name add up their times and keep the larger peak.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from contextlib import contextmanager

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident memory of this process now (falls back to the lifetime peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (worker processes a stage started and joined)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


class Stages:
    """Named stages of one job, in the order they first ran."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    @contextmanager
    def stage(self, name: str):
        peak = [rss_bytes()]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], rss_bytes())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        w0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            done.set()
            thread.join()
            peak[0] = max(peak[0], rss_bytes())
            row = self.rows.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_bytes": 0, "calls": 0})
            row["wall_s"] += time.perf_counter() - w0
            row["cpu_s"] += _cpu_seconds() - c0
            row["peak_rss_bytes"] = max(row["peak_rss_bytes"], peak[0])
            row["calls"] += 1

    def report(self) -> dict:
        return {k: {**v, "wall_s": round(v["wall_s"], 3), "cpu_s": round(v["cpu_s"], 3)} for k, v in self.rows.items()}

