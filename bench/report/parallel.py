"""Drawing the report's figures side by side: each job is a call that draws some figures and returns
what the report says about them (a FigureResult or a section); `run_jobs` returns every job's
result, in the jobs' order.

matplotlib draws in one thread, and a 192-row run's report spent 17 s drawing (168 memory panels,
24 trade-off figures) on a 2-core host. Where the platform forks, the jobs run in forked worker
processes, one per usable core: a job is not pickled (the workers inherit the job list), only its
result comes back, so a job may close over the runs and frames it draws from. Elsewhere, and in
a process that already runs other threads (forking one can deadlock the child on a lock one of
them held), the jobs run here one after another.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

_JOBS: Sequence[Callable[[], Any]] = ()  # the jobs of the run_jobs call in progress, inherited by its workers


def run_jobs(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Every job's result, in order; the longest jobs should come first (they start first)."""
    global _JOBS
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, len(jobs))
    if workers < 2 or not sys.platform.startswith("linux") or threading.active_count() > 1:
        return [job() for job in jobs]
    _JOBS = jobs
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_quiet_worker) as pool:
            return pool.map(_run_job, range(len(jobs)), chunksize=1)
    finally:
        _JOBS = ()


def _quiet_worker() -> None:
    """A worker ends when the pool is done with it (SIGTERM) and leaves Ctrl-C to the parent: it
    inherited bench.cli's handler, which would print a traceback per worker."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_job(index: int) -> Any:
    return _JOBS[index]()
