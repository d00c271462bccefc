"""Per-tensor work in parallel: encoding and candidate search run in worker processes, one per core.

The work per tensor (clip searches, GPTQ sweeps, errors, byte sizing) is numpy with Python loops, so threads
would serialise on the GIL; spawned worker processes each run BLAS and torch with one thread (threadpoolctl),
which on a shared machine is also faster than one process with several BLAS threads spinning against each
other. Results come back in task order and each task is computed exactly as in one process, so the output
never depends on the number of workers. `workers=1` runs inline. Must not decide anything itself.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor

from threadpoolctl import threadpool_limits

INLINE_BELOW = 4_000_000     # total task cost (tensor elements) under which one process is faster


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    threadpool_limits(1)


def map_tasks(fn: Callable, tasks: Iterable[tuple], workers: int | None = None, progress=None,
              cost: Callable[[tuple], float] | None = None) -> list:
    """[fn(*task) for task in tasks] (in task order), computed in `workers` processes (default: one per core),
    the costliest tasks first when `cost` says which; `progress(done)` is called as results arrive. fn must be
    a module-level function; tasks and results cross process boundaries by value (they should not need torch: a worker that imports it pays ~200 MiB for it)."""
    tasks = list(tasks)
    order = sorted(range(len(tasks)), key=lambda i: -cost(tasks[i])) if cost else list(range(len(tasks)))
    workers = min(default_workers() if workers is None else workers, len(tasks))
    if cost is not None and sum(cost(t) for t in tasks) < INLINE_BELOW:
        workers = 1                         # starting processes would cost more than the work
    done: dict[int, object] = {}
    if workers <= 1:
        with threadpool_limits(1):
            for i in order:
                done[i] = fn(*tasks[i])
                if progress is not None:
                    progress(len(done))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
            for i, result in zip(order, pool.map(fn, *zip(*(tasks[i] for i in order)), chunksize=1)):
                done[i] = result
                if progress is not None:
                    progress(len(done))
    return [done[i] for i in range(len(tasks))]
