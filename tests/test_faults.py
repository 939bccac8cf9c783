"""Faults a hostile probe found: each is made to happen for real through the `bench` command."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results.runfolder import load_run
from bench.suite.scenarios import MAX_SUITE_BYTES

pytestmark = pytest.mark.slow  # each starts the CLI (torch imports: seconds)


def test_a_deeply_nested_suite_is_refused_with_its_file_and_line(run_cli, write_suite, tmp_path):
    # 1 KB, 500 levels deep: PyYAML's composer recursed until RecursionError ("internal error", exit 1).
    nested = "name: deep\nmatrix:\n  model: [tiny_mlp]\nextra: " + "[" * 500 + "]" * 500 + "\n"
    suite = write_suite(nested, name="deep.yaml")
    for command in ("validate", "run"):
        result = run_cli(command, str(suite))
        assert result.returncode == 2, result.stderr
        assert f"{suite}, line 4: nests mappings and lists more than" in result.stderr
        assert "RecursionError" not in result.stderr and "internal error" not in result.stderr
    assert not (tmp_path / "reports").exists()


def test_a_suite_file_over_the_size_cap_is_refused(run_cli, write_suite):
    suite = write_suite("name: big\nmatrix:\n  model: [tiny_mlp]\n" + "# padding\n" * (MAX_SUITE_BYTES // 10))
    result = run_cli("validate", str(suite))
    assert result.returncode == 2
    assert f"{suite}: is larger than 1 MiB" in result.stderr


@pytest.mark.parametrize("location", ["mysql://bench@db.example/bench", "sqlite:///tmp/h.sqlite", ""])
def test_a_history_location_neither_a_path_nor_a_postgresql_url_is_refused(run_cli, write_suite, tmp_path, location):
    suite = write_suite("name: h\nmatrix:\n  model: [tiny_mlp]\n")
    for args in (("run", str(suite), "--history", location), ("history", "--history", location)):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "argument --history" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]  # no 'mysql:' folder, no run


def test_validate_lists_the_code_a_suites_factories_import_and_run(run_cli, write_suite, tmp_path):
    (tmp_path / "my_factories.py").write_text(
        "import torch\n\ndef mlp():\n    return torch.nn.Linear(4, 2)\n", encoding="utf-8"
    )
    suite = write_suite(
        """
        name: code
        matrix:
          model:
            - tiny_mlp
            - {name: mine, factory: "my_factories:mlp", input_shape: [4]}
            - {name: shell, factory: "os:system", input_shape: [4]}
        """
    )
    result = run_cli("validate", str(suite))
    assert result.returncode == 0, result.stderr
    assert "runs Python code" in result.stdout
    assert f"my_factories:mlp  ({tmp_path / 'my_factories.py'})" in result.stdout
    assert "os:system  (" in result.stdout


def test_a_second_writer_of_a_run_folder_is_refused_naming_the_process(write_suite, tmp_path):
    # Two `--resume` of one run used to measure the same scenarios side by side.
    suite = write_suite(
        """
        name: locked
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 3}}
        matrix: {model: [tiny_mlp], batch_size: [1, 2]}
        """
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(suite), "--no-history"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "reports").glob("*/results.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.1)
        [results] = list((tmp_path / "reports").glob("*/results.jsonl"))
        second = subprocess.run(
            [sys.executable, "-m", "bench", "run", "--resume", str(results.parent), "--no-history"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.poll() is None, "the first run ended before the second tried; the test proves nothing"
        assert second.returncode == 2, second.stderr
        assert f"another bench process (PID {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert json.loads((results.parent / "run.json").read_text())["status"] == "interrupted"  # the first one's


@pytest.fixture
def small_filesystem(tmp_path):
    """A 272 MiB tmpfs (the start-up check wants 256 MiB free), unmounted afterwards. Needs root
    (CI runs as root); skipped where mounting is not permitted, except under CI=true, where it
    is known to work."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=272m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        why = f"cannot mount a small tmpfs here ({done.stderr.strip()})"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(path: Path) -> None:
    """Write until the file system refuses another byte."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\1" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


def test_a_disk_that_fills_up_mid_run_ends_it_cleanly_and_resume_finishes_it(write_suite, tmp_path, small_filesystem):
    suite = write_suite(
        """
        name: full
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.2}}
        matrix: {model: [tiny_mlp, tiny_cnn]}  # tiny_cnn's artifact is written after the disk is full
        """
    )
    reports = small_filesystem / "reports"
    run = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(suite), "--reports", str(reports)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and run.poll() is None:
        found = list(reports.glob("*/results.jsonl"))
        if found and found[0].read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    filler = small_filesystem / "filler"
    _fill(filler)
    _, stderr = run.communicate(timeout=180)

    assert run.returncode == 2, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    [run_dir] = [p for p in reports.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert "bench: error: no space left on " in stderr and f"bench run --resume {run_dir}" in stderr
    written = load_run(run_dir)
    records = written.records
    assert written.warnings == [] and len(records) == 1  # finished rows kept, whole lines only
    assert all(r.status == "ok" for r in records), [r.reason for r in records]  # the disk failed no scenario
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["reason"].startswith("no space left on ")
    leftovers = [p for p in reports.rglob("*") if p.name.startswith((".tmp-", ".meta-", ".run.json", ".space"))]
    assert leftovers == []

    filler.unlink()
    resumed = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--resume", str(run_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    written = load_run(run_dir)
    records = written.records
    # every ok row says who else used the CPU while it was timed (no verdict asserted: a shared host)
    assert all(r.contention.verdict in ("quiet", "contended") and r.contention.wall_s > 0 for r in records)
    assert written.warnings == []
    assert [r.scenario_id for r in records] == ["tiny_mlp-b1-t1-fp32-eager", "tiny_cnn-b1-t1-fp32-eager"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["reason"] is None


def test_a_failure_in_the_parent_keeps_its_traceback_in_the_run_folder_and_debug_prints_it(
    run_cli, write_suite, tmp_path
):
    # tiny_mlp cannot take 3x32x32 inputs: the fp32 reference, made in the parent, fails. There is no
    # worker log for it; the reason said only "ValueError: ..." and the traceback was lost.
    suite = write_suite("name: parent\nmatrix:\n  model: [tiny_mlp]\n  input_shape: [[3, 32, 32]]\n")
    result = run_cli("run", str(suite), "--no-history", "--debug")
    assert result.returncode == 1, result.stderr
    [run_dir] = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    [row] = load_run(run_dir).records
    kept = f"workers/{row.scenario_id}/runner-traceback.log"
    assert row.status == "failed" and row.reason.endswith(f"(traceback: {kept})"), row.reason
    assert row.files == {"runner_traceback": kept}
    log = (run_dir / kept).read_text()
    assert "preparing the artifact failed:\nTraceback (most recent call last):" in log
    assert "shapes cannot be multiplied" in log and "bench/runtimes/formats.py" in log
    assert f"bench: {row.scenario_id}: preparing the artifact failed:\nTraceback" in result.stderr


def test_run_refuses_a_history_that_is_a_folder_before_measuring(run_cli, write_suite, tmp_path):
    # It measured the whole suite, then exited 0 with a warning that the run was not recorded.
    suite = write_suite("name: hist\nmatrix:\n  model: [tiny_mlp]\n")
    (tmp_path / "folder").mkdir()
    for history in (["--history", "folder"], []):
        if not history:
            (tmp_path / "reports" / "history.sqlite").mkdir(parents=True)  # the default one, beside the runs
        result = run_cli("run", str(suite), *history)
        assert result.returncode == 2, result.stderr
        where = "folder" if history else "reports/history.sqlite"
        assert f"bench: error: the history {where} is a folder; --history takes an SQLite file" in result.stderr
        assert [p.name for p in (tmp_path / "reports").glob("*") if p.name != "history.sqlite"] == []
