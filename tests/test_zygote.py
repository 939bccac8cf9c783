"""The zygote protocol (measure.zygote) against a real zygote: forked children run pytest and report how they ended."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from bench.measure.child import child_env
from bench.measure.zygote import ZygoteWorkers, fork_available

pytestmark = [
    pytest.mark.slow,  # a zygote imports torch, onnxruntime and pytest (seconds)
    pytest.mark.skipif(not fork_available(), reason="the zygote needs os.fork and /proc"),
]

TESTS = """
import os, time, ctypes
import torch

def test_passes():
    print("threads", torch.get_num_threads(), os.environ["MARK"])

def test_fails():
    assert False, "failing on purpose"

def test_segfaults():
    ctypes.string_at(0)

def test_sleeps():
    open(os.environ["MARK"], "w").write(str(os.getpid()))
    time.sleep(600)
"""


@pytest.fixture
def workers(tmp_path):
    announced: list[str] = []
    pool = ZygoteWorkers(child_env(1, {}), tmp_path / "zygote.log", announced.append)
    pool.announced = announced  # type: ignore[attr-defined]
    yield pool
    pool.close()


def _start(workers: ZygoteWorkers, tmp_path: Path, test: str, mark: str = "m"):
    (tmp_path / "test_child.py").write_text(textwrap.dedent(TESTS), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    argv = [
        f"{tmp_path / 'test_child.py'}::{test}",
        "-c",
        str(tmp_path / "pytest.ini"),
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
    ]
    env = child_env(2, {"MARK": mark, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    return workers.start("pytest", argv, env, tmp_path / f"{test}.out", tmp_path / f"{test}.err")


def test_children_report_pytests_exit_status_and_a_crash_leaves_the_zygote_serving(workers, tmp_path):
    passed = _start(workers, tmp_path, "test_passes", mark="first")
    assert passed.wait() == 0, (tmp_path / "test_passes.err").read_text()
    # The child took its environment and its output files; pytest ran in it.
    assert "first" in (tmp_path / "test_passes.out").read_text()
    assert _start(workers, tmp_path, "test_fails").wait() == 1
    crashed = _start(workers, tmp_path, "test_segfaults")
    assert crashed.wait() == -signal.SIGSEGV
    assert "Segmentation fault" in (tmp_path / "test_segfaults.err").read_text()  # faulthandler's report
    again = _start(workers, tmp_path, "test_passes", mark="after-crash")
    assert again.wait() == 0
    assert again.pid != passed.pid
    assert workers.kind == "fork" and not workers.announced  # one zygote throughout
    assert len(workers.facts) == 1 and workers.facts[0].threads <= 2  # no OpenMP pool in the zygote


def test_children_run_at_once_and_each_gets_its_own_exit_status(workers, tmp_path):
    # A capacity measurement's instances run side by side, all forked from the run's zygote.
    mark = tmp_path / "pid"
    sleeping = _start(workers, tmp_path, "test_sleeps", mark=str(mark))
    _wait_for(mark.exists)
    failing = _start(workers, tmp_path, "test_fails")
    assert failing.wait() == 1 and sleeping.poll() is None
    assert sleeping.wait(timeout_s=0.2) is None  # still running: a wait that times out says so
    sleeping.kill()
    assert sleeping.wait() == -signal.SIGKILL and failing.pid != sleeping.pid
    # Reaped once the runner had their statuses: no zombie stays behind the zygote.
    _wait_for(lambda: not psutil.Process(workers.zygote.process.pid).children())


def test_a_child_is_killed_by_pid_and_its_parent_is_the_zygote(workers, tmp_path):
    mark = tmp_path / "pid"
    child = _start(workers, tmp_path, "test_sleeps", mark=str(mark))
    assert child.poll() is None
    _wait_for(lambda: mark.exists() and mark.read_text())  # created, then written: wait for the pid itself
    assert int(mark.read_text()) == child.pid
    assert psutil.Process(child.pid).ppid() == workers.zygote.process.pid
    child.kill()
    assert child.wait() == -signal.SIGKILL


def test_a_child_dies_with_the_zygote_and_a_new_zygote_takes_over(workers, tmp_path):
    mark = tmp_path / "pid"
    child = _start(workers, tmp_path, "test_sleeps", mark=str(mark))
    _wait_for(mark.exists)
    first = workers.zygote
    os.kill(first.process.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL and child.zygote_died
    _wait_for(lambda: not psutil.pid_exists(child.pid) or psutil.Process(child.pid).status() == "zombie")
    workers.worker_ended(child)
    assert workers.zygote is not first and workers.kind == "fork"
    assert "starting a new one" in workers.announced[0]
    assert _start(workers, tmp_path, "test_passes").wait() == 0
    # A second death: the run goes on with fresh workers (start answers None), and says so.
    os.kill(workers.zygote.process.pid, signal.SIGKILL)
    workers.zygote.process.wait()
    assert _start(workers, tmp_path, "test_passes") is None
    assert workers.kind == "fresh" and "fresh workers" in workers.announced[-1]


def test_ready_s_is_when_the_zygote_was_ready_not_when_its_first_worker_was_asked_for(workers, tmp_path):
    # bench run starts the zygote early; the first worker is asked for after the environment and artifact.
    zygote = workers.zygote
    readable, _, _ = select.select([zygote.process.stdout], [], [], 120)
    assert readable, "the zygote never said it was ready"
    seen_s = time.monotonic() - zygote.started_s
    time.sleep(1.0)
    child = _start(workers, tmp_path, "test_passes")
    assert child.wait() == 0
    assert 0 < workers.facts[0].ready_s <= seen_s


def test_a_zygote_asked_for_no_worker_is_killed_at_once_not_waited_for(tmp_path):
    # A run that stops before its first scenario (a refused resume, a full disk) must not wait for imports.
    pool = ZygoteWorkers(child_env(1, {}), tmp_path / "zygote.log", print)
    process = pool.zygote.process
    pool.close()
    assert process.returncode == -signal.SIGKILL


def test_closing_leaves_no_process_behind(tmp_path):
    pool = ZygoteWorkers(child_env(1, {}), tmp_path / "zygote.log", print)
    mark = tmp_path / "pid"
    child = _start(pool, tmp_path, "test_sleeps", mark=str(mark))
    _wait_for(mark.exists)
    zygote_pid = pool.zygote.process.pid
    child.kill()
    child.wait()
    pool.close()
    assert not psutil.pid_exists(zygote_pid)
    assert not psutil.pid_exists(child.pid)


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


RUNNER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import test_zygote
from bench.measure.child import child_env
from bench.measure.zygote import ZygoteWorkers
tmp = Path(sys.argv[2])
pool = ZygoteWorkers(child_env(1, {}), tmp / "zygote.log", print)
child = test_zygote._start(pool, tmp, "test_sleeps", mark=str(tmp / "pid"))
print(pool.zygote.process.pid, child.pid, flush=True)
time.sleep(600)
"""


def test_killing_the_runner_takes_the_zygote_and_its_child_along(tmp_path):
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(Path(__file__).parent), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        zygote_pid, child_pid = map(int, runner.stdout.readline().split())
        _wait_for((tmp_path / "pid").exists)
    finally:
        runner.kill()  # SIGKILL: no clean-up code runs in the runner
        runner.wait()
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in (zygote_pid, child_pid) if psutil.pid_exists(p)], 10)
    assert alive == []
