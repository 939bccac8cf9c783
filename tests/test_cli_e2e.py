"""End to end: the real `bench` command on tiny models, checking the files it writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bench.history import store as history
from bench.measure.zygote import fork_available
from bench.results.runfolder import load_run

pytestmark = pytest.mark.slow

MIXED_SUITE = """
name: mixed
description: ok rows, a model/input mismatch, an unsupported precision and a timeout.
defaults:
  model: tiny_mlp
  measure: {warmup_rounds: 3, min_rounds: 20, max_rounds: 400, max_time_s: 0.3}
matrix:
  batch_size: [1, 4]
  threads: [1]
include:
  - {input_shape: [3, 32, 32]}          # tiny_mlp takes 64 features: fails while preparing
  - {precision: int8_dynamic, load: mmap}   # packed int8 weights cannot be mapped: unsupported
  # killed before it is done: a forked worker (measure.zygote) starts in well under 1 s, so its steady state is long
  - {model: tiny_cnn, threads: 2, timeout_s: 1, measure: {min_rounds: 100000, max_rounds: 100000, max_time_s: 60}}
"""


def _run_dir(tmp_path: Path) -> Path:
    runs = sorted(p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 1, runs
    return runs[0]


def test_run_writes_a_row_per_scenario_whatever_happens(run_cli, write_suite, tmp_path):
    suite = write_suite(MIXED_SUITE)
    result = run_cli("run", str(suite))

    assert result.returncode == 1, result.stderr  # some scenarios failed
    assert "Traceback" not in result.stderr
    run_dir = _run_dir(tmp_path)
    assert f"run folder: reports/{run_dir.name}" in result.stdout
    written = load_run(run_dir)
    assert written.warnings == []
    records = written.records
    by_id = {r.scenario_id: r for r in records}
    assert list(by_id) == [
        "tiny_mlp-b1-t1-fp32-eager",
        "tiny_mlp-b4-t1-fp32-eager",
        "tiny_mlp-b1-t1-fp32-eager-s3x32x32",
        "tiny_mlp-b1-t1-int8_dynamic-mmap",
        "tiny_cnn-b1-t2-fp32-eager",
    ]
    for scenario_id in by_id:
        assert scenario_id in result.stdout  # the closing table lists every scenario

    for scenario_id in ("tiny_mlp-b1-t1-fp32-eager", "tiny_mlp-b4-t1-fp32-eager"):
        row = by_id[scenario_id]
        assert row.status == "ok", row.reason
        lat = row.latency_s
        assert 20 <= lat.rounds <= 400
        assert 0 < lat.min <= lat.median <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max
        assert row.load_s > 0 and row.first_inference_s > 0
        assert row.throughput_samples_per_s == pytest.approx(row.batch_size / lat.mean)
        assert row.torch_num_threads == 1 and row.torch_num_interop_threads == 1
        assert row.cpu_utilization < 1.5, row  # only one thread ran ...
        if not row.contended:  # ... and it ran (on a contended host it was seen at 0.2 of a core)
            assert row.cpu_utilization > 0.2, row
        rss = row.rss_bytes
        assert 0 < rss.before_load <= rss.peak and rss.peak_anon + rss.peak_file == rss.peak
        assert rss.peak_uss and rss.peak_uss <= rss.peak
        assert row.peak_rss_kernel_bytes >= rss.before_load
        assert row.artifact_bytes > 0 and len(row.artifact_sha256) == 64

        raw = json.loads((run_dir / row.files["benchmark_json"]).read_text())
        round_times = raw["benchmarks"][0]["stats"]["data"]
        assert len(round_times) == lat.rounds  # percentiles come from every kept round
        assert max(round_times) == lat.max

        with open(run_dir / row.files["rss_csv"], newline="") as f:
            samples = list(csv.DictReader(f))
        phases = {s["phase"] for s in samples}
        assert {"startup", "steady"} <= phases  # a tiny model may load between two samples
        assert all(int(s["rss_bytes"]) > 0 for s in samples)

    mismatch = by_id["tiny_mlp-b1-t1-fp32-eager-s3x32x32"]
    assert mismatch.status == "failed"
    assert "preparing the artifact failed" in mismatch.reason and "shapes cannot be multiplied" in mismatch.reason

    unsupported = by_id["tiny_mlp-b1-t1-int8_dynamic-mmap"]
    assert unsupported.status == "unsupported" and "mmap cannot load int8_dynamic" in unsupported.reason

    timeout = by_id["tiny_cnn-b1-t2-fp32-eager"]
    assert timeout.status == "failed" and "timed out after 1 s" in timeout.reason

    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["status"] == "complete"
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["cpu_flags"] and "avx2" in environment["isa"]
    assert environment["libraries"]["torch"] and environment["torch"]["cpu_capability"]
    assert all(r.environment_fingerprint == environment["fingerprint"] for r in records)
    assert (run_dir / "suite.yaml").read_text() == suite.read_text()


def test_a_second_run_never_overwrites_the_first(run_cli, write_suite, tmp_path):
    suite = write_suite(
        """
        name: again
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}
        matrix: {model: [tiny_mlp]}
        """
    )
    first = run_cli("run", str(suite))
    second = run_cli("run", str(suite))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    runs = sorted(p.name for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2
    for name in runs:
        records = load_run(tmp_path / "reports" / name).records
        assert [r.status for r in records] == ["ok"]
        assert records[0].run_id == name


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("name: x\nmatrix:\n  model: [tiny_mlp\n", ["line", "not valid YAML"]),
        ("name: x\nmatrix:\n  model: [tiny_mlp]\n  batchsize: [1]\n", ["line 4", "batchsize", "did you mean"]),
        ("name: x\nmatrix:\n  model: [tiny_mlp]\n  threads: [two]\n", ["line 4", "matrix.threads.0", "integer"]),
        ("name: x\nmatrix:\n  model: [resnet81]\n", ["line 3", "unknown model", "resnet18"]),
        ("name: x\nmatrix: {}\n", ["line 2", "empty"]),
    ],
    ids=["syntax", "unknown-key", "wrong-type", "unknown-model", "empty-matrix"],
)
def test_bad_suites_are_refused_before_anything_runs(run_cli, write_suite, tmp_path, text, fragments):
    suite = write_suite(text, name="bad.yaml")
    for command in ("validate", "run"):
        result = run_cli(command, str(suite))
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert str(suite) in result.stderr
        for fragment in fragments:
            assert fragment in result.stderr
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_debug_shows_the_traceback(run_cli, write_suite):
    suite = write_suite("name: x\nmatrix: {}\n")
    assert "Traceback" in run_cli("validate", str(suite), "--debug").stderr


def test_help_explains_every_command(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "validate", "models", "selfcheck"):
        assert command in result.stdout
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and "usage: bench" in sub.stdout


@pytest.mark.serial  # it times its own timer and sampler
def test_selfcheck_measures_itself(run_cli, tmp_path):
    result = run_cli("selfcheck", "--model", "tiny_mlp", "--runs", "2", "--block-time", "0.2")
    assert result.returncode in (0, 1), result.stderr  # 1 = a target missed on a noisy machine
    assert "Traceback" not in result.stderr
    report = json.loads(next((tmp_path / "reports").glob("*/selfcheck.json")).read_text())
    checks = {c["name"]: c["value"] for c in report["checks"]}
    for name in checks:
        assert name in result.stdout
    assert f"2 worker processes ({'forked' if fork_available() else 'fresh interpreters'})" in result.stdout
    # Contended measurements are listed, and then no verdict is given: the figures mean little
    # (a loaded host gave harness/Timer 0.22). This host is shared: either case may happen.
    assert isinstance(report["contended"], list)
    assert ("NO VERDICT" in result.stdout) == bool(report["contended"])
    if report["contended"]:
        assert not report["passed"] and result.returncode == 1
        return
    # Loose sanity bounds: the targets themselves are for `bench selfcheck` on a quiet machine.
    assert 0.5 < checks["harness median / torch Timer median"] < 2.0
    assert 0.8 < checks["sampled peak RSS / kernel VmHWM"] <= 1.0
    assert -0.5 < checks["sampler overhead on median latency"] < 0.5
    assert 0 <= checks["run-to-run CV of the median"] < 1.0


def test_sigterm_stops_the_run_keeps_its_rows_and_leaves_no_worker_behind(write_suite, tmp_path):
    import subprocess
    import sys
    import time

    import psutil

    suite = write_suite(
        """
        name: stopped
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 3}}
        matrix: {model: [tiny_mlp], batch_size: [1, 2, 3]}
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(suite)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the first row is written and the second worker runs
        found = list((tmp_path / "reports").glob("*/results.jsonl"))
        if found and found[0].read_text().count("\n") == 1 and psutil.Process(parent.pid).children():
            results = found[0]
            break
        time.sleep(0.2)
    assert results is not None, "the first scenario never finished"
    workers = psutil.Process(parent.pid).children(recursive=True)
    parent.terminate()
    _, stderr = parent.communicate(timeout=60)

    assert parent.returncode == 143, stderr  # 128 + SIGTERM; Ctrl-C gives 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], f"orphaned workers: {alive}"
    written = load_run(results.parent)
    assert [r.scenario_id for r in written.records] == ["tiny_mlp-b1-t1-fp32-eager"] and written.warnings == []
    assert json.loads((results.parent / "run.json").read_text())["status"] == "interrupted"
    assert f"bench run --resume {results.parent.relative_to(tmp_path)}" in stderr
    history_path = tmp_path / "reports" / "history.sqlite"
    [recorded] = history.list_runs(history_path)  # the finished row reached the history too
    assert (recorded.run_id, recorded.scenarios, recorded.status) == (results.parent.name, 1, "interrupted")

    # As if the parent had been killed mid-write: half a line at the end. Resume keeps it aside.
    with open(results, "a") as f:
        f.write('{"run_id": "half a line')
    resumed = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--resume", str(results.parent)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "2 of 3 scenarios have no row yet" in resumed.stderr
    written = load_run(results.parent)
    assert written.warnings == []
    records = written.records
    assert [r.scenario_id for r in records] == [f"tiny_mlp-b{b}-t1-fp32-eager" for b in (1, 2, 3)]
    assert len({r.run_id for r in records}) == 1
    (partial,) = results.parent.glob("results.jsonl.partial-*")
    assert partial.read_text() == '{"run_id": "half a line'
    assert json.loads((results.parent / "run.json").read_text())["status"] == "complete"
    assert (results.parent / "report.html").exists()
    [recorded] = history.list_runs(history_path)
    assert (recorded.scenarios, recorded.ok, recorded.status) == (3, 3, "complete")


def test_a_worker_above_max_rss_bytes_is_killed_and_the_run_goes_on(run_cli, write_suite, tmp_path):
    suite = write_suite(
        """
        name: fat
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}
        matrix: {model: [tiny_mlp], batch_size: [1, 2]}
        include:
          - {model: tiny_cnn, max_rss_bytes: 64 MiB}   # importing torch alone takes more
        """
    )
    result = run_cli("run", str(suite))
    assert result.returncode == 1
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    records = load_run(run_dir).records
    assert [r.status for r in records] == ["ok", "ok", "failed"]
    assert "exceeded max_rss_bytes" in records[2].reason and "67108864" in records[2].reason


def test_an_unwritable_reports_folder_is_refused_at_the_start(run_cli, write_suite, tmp_path):
    suite = write_suite("name: x\nmatrix: {model: [tiny_mlp]}\n")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the reports folder should be")
    result = run_cli("run", str(suite), "--reports", str(blocker / "reports"))
    assert result.returncode == 2
    assert f"{blocker / 'reports'} cannot be created: {blocker} is a file, not a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_runs_at_once_write_two_complete_run_folders(write_suite, tmp_path):
    import subprocess
    import sys

    suite = write_suite(
        """
        name: twins
        defaults: {measure: {warmup_rounds: 1, min_rounds: 3, max_time_s: 0.02}}
        matrix: {model: [tiny_mlp], batch_size: [1, 2]}
        """
    )
    command = [sys.executable, "-m", "bench", "run", str(suite)]
    runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]
    assert [p.wait(timeout=300) for p in runs] == [0, 0]
    folders = sorted(p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(folders) == 2
    for folder in folders:
        written = load_run(folder)
        records = written.records
        assert written.warnings == [] and [r.status for r in records] == ["ok", "ok"]
        assert {r.run_id for r in records} == {folder.name}
