"""pytest plugin loaded into every worker (`-p bench.measure.harness_plugin`).

pytest-benchmark describes the machine with py-cpuinfo and the commit with git when it
writes its JSON, facts the run already keeps in environment.json: these hooks give it the
short version. And the worker leaves as soon as pytest is done (see pytest_unconfigure).
"""

from __future__ import annotations

import os
import platform
import sys
import time

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


_exit_status = 0
configured_s: float | None = None  # when pytest was configured: the end of the worker's start (bench.results.timeline)


def pytest_configure(config):
    global configured_s  # set per worker: a forked worker inherits this module already imported
    configured_s = time.monotonic()


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
