"""bench.report.parallel: the report's figures drawn side by side, results in the jobs' order."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
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
    # In a new interpreter: a pytest-xdist worker runs execnet's threads, and a process with other
    # threads draws in place (see the next test), so this test would not see the pool there.
    script = (
        "import os; from bench.report.parallel import run_jobs\n"
        "pids = set(run_jobs([os.getpid for _ in range(4)]))\n"
        "print(os.getpid() in pids, len(pids))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    in_parent, processes = done.stdout.split()
    assert in_parent == "False" and int(processes) >= 1


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
