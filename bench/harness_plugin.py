"""pytest plugin loaded into every worker (`-p bench.harness_plugin`).

pytest-benchmark describes the machine with py-cpuinfo and the commit with git when it
writes its JSON, facts the run already keeps in environment.json: these hooks give it the
short version. The worker dies with its parent (pytest_configure) and leaves as soon as
pytest is done (pytest_unconfigure).
"""

from __future__ import annotations

import os
import platform
import sys

import pytest


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own, which asks py-cpuinfo
def pytest_benchmark_generate_machine_info(config):
    return {
        "node": platform.node(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
        "system": platform.system(),
        "release": platform.release(),
        "note": "bench keeps the full environment in the run folder's environment.json",
    }


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_generate_commit_info(config):
    return {"note": "bench keeps the git sha in the run folder's environment.json"}


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def pytest_configure(config):
    """A worker whose parent is killed (`bench run`, or a fleet host's Dask worker) must not
    live on, measuring for no one and disturbing whatever runs next on the host."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    from bench.worker import PARENT_PID_ENV

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):  # the parent died before prctl took effect
        os._exit(1)


_exit_status = 0


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave at once when pytest is done: everything is written, and tearing down torch's
    modules at interpreter exit took ~2 s and touched ~100 MiB per worker for nothing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
