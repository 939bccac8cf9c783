"""The one child launcher (bench.measure.child): fresh or forked, a child gets the same files, and a crash's tail is
faulthandler's report, whoever the child is."""

from __future__ import annotations

import signal

import pytest

from bench.measure.child import ChildFiles, child_env, launch, tail


@pytest.mark.slow  # the session's zygote imports torch, onnxruntime and pytest (seconds)
@pytest.mark.parametrize("kind", ["fresh", "fork"])
def test_a_child_that_crashes_in_native_code_leaves_its_python_stack_as_its_tail(kind, tmp_path, zygote):
    if kind == "fork" and zygote is None:
        pytest.skip("no zygote where fork is not available")
    files = ChildFiles.in_folder(tmp_path / "child", "crash.")
    child = launch("tests.support.crash_child", [], child_env(1, {}), files, zygote if kind == "fork" else None)
    assert child.wait() == -signal.SIGSEGV and child.kind == kind
    child.end()
    assert files.stderr == tmp_path / "child" / "crash.stderr.log"
    report = child.tail()
    assert report.startswith("Fatal Python error: Segmentation fault"), report
    assert "crash_child.py" in report  # the frame that crashed, innermost first


def test_a_tail_without_a_crash_is_the_last_lines(tmp_path):
    log = tmp_path / "stderr.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    assert tail(log).splitlines() == [f"line {i}" for i in range(18, 30)]
    assert tail(tmp_path / "missing.log") == ""
