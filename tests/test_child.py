"""The one child launcher (bench.child): fresh or forked, a child gets the same files, and a crash's tail is
faulthandler's report, whoever the child is."""

from __future__ import annotations

import signal

import pytest

from bench.child import ChildFiles, child_env, launch, tail
from bench.zygote import ZygoteWorkers, fork_available

pytestmark = pytest.mark.slow  # a zygote imports torch, onnxruntime and pytest (seconds)


FORK = pytest.param("fork", marks=pytest.mark.skipif(not fork_available(), reason="no zygote here"))


@pytest.mark.parametrize("kind", ["fresh", FORK])
def test_a_child_that_crashes_in_native_code_leaves_its_python_stack_as_its_tail(kind, tmp_path):
    workers = ZygoteWorkers(child_env(1, {}), tmp_path / "zygote.log", print) if kind == "fork" else None
    try:
        files = ChildFiles.in_folder(tmp_path / "child", "crash.")
        child = launch("tests.support.crash_child", [], child_env(1, {}), files, workers)
        assert child.wait() == -signal.SIGSEGV and child.kind == kind
        child.end()
    finally:
        if workers is not None:
            workers.close()
    assert files.stderr == tmp_path / "child" / "crash.stderr.log"
    report = child.tail()
    assert report.startswith("Fatal Python error: Segmentation fault"), report
    assert "crash_child.py" in report  # the frame that crashed, innermost first


def test_a_tail_without_a_crash_is_the_last_lines(tmp_path):
    log = tmp_path / "stderr.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    assert tail(log).splitlines() == [f"line {i}" for i in range(18, 30)]
    assert tail(tmp_path / "missing.log") == ""
