"""bench.report.parallel: the report's figures drawn side by side, results in the jobs' order."""

from __future__ import annotations

import functools
import os
import threading

import pytest

from bench.report.parallel import run_jobs

CORES = len(os.sched_getaffinity(0))


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value


def test_every_result_comes_back_in_the_jobs_order():
    done = run_jobs([functools.partial(_pid_and, n) for n in range(7)])
    assert [value for _, value in done] == list(range(7))


@pytest.mark.skipif(CORES < 2, reason="one usable core: the jobs run in this process")
def test_the_jobs_run_in_worker_processes():
    pids = {pid for pid, _ in run_jobs([functools.partial(_pid_and, n) for n in range(4)])}
    assert os.getpid() not in pids


def test_a_process_that_runs_other_threads_draws_here():
    # Forking it could deadlock a worker on a lock the other thread held.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        pids = {pid for pid, _ in run_jobs([functools.partial(_pid_and, n) for n in range(4)])}
    finally:
        stop.set()
        other.join()
    assert pids == {os.getpid()}
