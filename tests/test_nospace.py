"""A full disk, injected at the write functions: recognised, and the run ended cleanly (fast; the
end-to-end test on a real full file system is in test_faults.py)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3

import pytest

from bench.measure import runner
from bench.results import record as record_module
from bench.results.nospace import NoSpaceLeft, is_no_space
from bench.results.record import ResultRecord
from bench.results.runfolder import load_run
from bench.suite.scenarios import parse_suite


def test_no_space_is_recognised_through_wrappers_and_library_texts():
    assert is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_no_space(sqlite3.OperationalError("database or disk is full"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert is_no_space(outer)
    assert not is_no_space(OSError(errno.EACCES, "Permission denied"))
    assert not is_no_space(RuntimeError("shapes cannot be multiplied"))


def _full_after(monkeypatch, good_writes: int) -> None:
    """os.write in bench.results.record writes `good_writes` times, then half a buffer, then fails with ENOSPC."""
    real_write, calls = os.write, [0]

    def write(fd, data):
        calls[0] += 1
        if calls[0] <= good_writes:
            return real_write(fd, data)
        if calls[0] == good_writes + 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_module.os, "write", write)


def test_a_full_disk_while_appending_a_row_ends_the_run_with_whole_rows_and_the_reason(tmp_path, monkeypatch):
    suite = parse_suite("name: s\nmatrix: {model: [tiny_mlp], batch_size: [1, 2, 3]}\n")
    monkeypatch.setattr(
        runner,
        "run_scenario",
        lambda context, scenario, progress, file_stem=None: ResultRecord(
            **runner.record_base(context, scenario, "t"), status="failed", reason="not run"
        ),
    )
    monkeypatch.setattr(runner, "collect_environment", lambda: {"fingerprint": "f", "git": {"sha": None}})
    context = runner.start_run(suite, tmp_path / "reports")
    _full_after(monkeypatch, good_writes=1)  # the first row is written; the second is cut short
    with pytest.raises(NoSpaceLeft) as info:
        runner.run_suite(context)
    results = context.results_path
    message = str(info.value)
    assert message.startswith(f"no space left on {results}: the run stopped")
    assert "1 finished row(s)" in message and f"bench run --resume {context.run_dir}" in message
    assert info.value.exit_code == 2
    written = load_run(context.run_dir)
    assert [r.scenario_id for r in written.records] == ["tiny_mlp-b1-t1-fp32-eager"] and written.warnings == []
    assert results.read_text().endswith("\n")  # the half line was cut away
    run_info = json.loads((context.run_dir / "run.json").read_text())
    assert run_info["status"] == "interrupted" and run_info["reason"] == f"no space left on {results}"
    assert sorted(p.name for p in context.run_dir.iterdir() if p.name.startswith(".")) == []
