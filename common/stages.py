"""Where a job's time and memory go: named stages, each with its wall time, CPU time (this process's and its
joined worker processes') and peak resident memory (this process's), for reports and benchmarks
(`with stages.stage("calibrate"): ...`; `stages.report()`), and the peak of this process plus its live worker
processes (`peak_tree_rss_bytes`, sampled every 100 ms; an upper bound: shared pages count once per process).

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


def _children(pid: str) -> list[str]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                out += f.read().decode().split()
    except OSError:
        pass
    return out


def tree_rss_bytes() -> int:
    """Resident memory of this process plus every live descendant (worker processes): an upper bound on the
    job's memory, since pages shared between them (libraries) count once per process. This process's alone
    where /proc has no children lists."""
    total, todo = 0, [str(os.getpid())]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            if pid == str(os.getpid()):
                return rss_bytes()
            continue
        todo += _children(pid)
    return total


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
        peak, tree = [rss_bytes()], [tree_rss_bytes()]
        done = threading.Event()

        def sample() -> None:
            n = 0
            while not done.wait(0.02):
                peak[0] = max(peak[0], rss_bytes())
                n += 1
                if n % 5 == 0:                        # the process tree every 100 ms: a walk of /proc
                    tree[0] = max(tree[0], tree_rss_bytes())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        w0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            done.set()
            thread.join()
            peak[0] = max(peak[0], rss_bytes())
            row = self.rows.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_bytes": 0,
                                              "peak_tree_rss_bytes": 0, "calls": 0})
            row["wall_s"] += time.perf_counter() - w0
            row["cpu_s"] += _cpu_seconds() - c0
            row["peak_rss_bytes"] = max(row["peak_rss_bytes"], peak[0])
            row["peak_tree_rss_bytes"] = max(row["peak_tree_rss_bytes"], tree[0], peak[0])
            row["calls"] += 1

    def report(self) -> dict:
        return {k: {**v, "wall_s": round(v["wall_s"], 3), "cpu_s": round(v["cpu_s"], 3)} for k, v in self.rows.items()}

