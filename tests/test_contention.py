"""Contention per row: others' CPU time and steal over the timed steady state, and the verdict."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest

from bench.checks import contention
from bench.checks.contention import Contention, Probe, verdict
from bench.console import summary_table
from bench.measure import runner
from bench.measure.runner import ContentionPolicy
from bench.results.record import ResultRecord
from bench.results.runfolder import load_run
from bench.suite.scenarios import parse_suite

pytestmark = pytest.mark.serial  # a test beside other tests would see contention it did not make


def test_the_verdict_allows_the_free_cores_and_a_margin_per_thread():
    # 2 cores, 1 thread: one core is free for others, plus 0.1 of a core
    assert verdict(2, 1, 1.0, others_cpu_s=1.0, steal_s=0.0)[0] == "quiet"
    state, why = verdict(2, 1, 1.0, others_cpu_s=1.3, steal_s=0.0)
    assert state == "contended" and "1.30 cores" in why
    # 2 cores, 2 threads: nothing is free
    assert verdict(2, 2, 2.0, others_cpu_s=0.3, steal_s=0.0)[0] == "quiet"  # 0.15 cores
    assert verdict(2, 2, 2.0, others_cpu_s=0.5, steal_s=0.0)[0] == "contended"
    state, why = verdict(2, 2, 1.0, others_cpu_s=0.0, steal_s=0.2)
    assert state == "contended" and "stole 0.20 cores" in why


def test_a_probe_reads_the_kernels_counters_and_leaves_out_its_own_cpu_time():
    probe = Probe(os.getppid())
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # this process's own work is no contention
        pass
    figures = probe.finish(threads=1)
    assert set(figures) == {f.name for f in dataclasses.fields(Contention)}
    assert figures["verdict"] in ("quiet", "contended") and figures["cores"] == len(os.sched_getaffinity(0))
    assert figures["worker_cpu_s"] > 0 and figures["others_cpu_s"] >= 0 and figures["steal_s"] >= 0
    assert contention.process_cpu_s(os.getpid()) > 0


def _record(context, scenario, state):
    figures = dict(
        verdict=state,
        why="test",
        cores=2,
        threads=1,
        wall_s=1.0,
        others_cpu_s=0.0,
        steal_s=0.0,
        worker_cpu_s=1.0,
        parent_cpu_s=0.0,
        cpu_utilization_per_thread=1.0,
    )
    return ResultRecord(**runner.record_base(context, scenario, "t"), status="ok", contention=Contention(**figures))


def test_retry_measures_a_contended_scenario_again_and_mark_keeps_it(tmp_path, monkeypatch):
    suite = parse_suite("name: s\nmatrix: {model: [tiny_mlp]}\n")
    monkeypatch.setattr(runner, "collect_environment", lambda: {"fingerprint": "f", "git": {"sha": None}})
    for policy, states, expected in (
        (ContentionPolicy("retry", retries=2), ["contended", "quiet", "quiet"], ("quiet", 2)),
        (ContentionPolicy("retry", retries=2), ["contended"] * 4, ("contended", 3)),
        (ContentionPolicy("mark"), ["contended", "quiet"], ("contended", 1)),
    ):
        given = iter(states)
        monkeypatch.setattr(
            runner, "run_scenario", lambda c, s, p, file_stem=None, given=given: _record(c, s, next(given))
        )
        context = runner.start_run(suite, tmp_path / "reports")
        [row] = runner.run_suite(context, on_contention=policy)
        assert (row.contention.verdict, row.contention.attempts) == expected
        [kept] = load_run(context.run_dir).records
        assert kept.contention == row.contention
    assert "ok (contended)" in summary_table([row]) and "1 row(s) measured on a contended host" in summary_table([row])


SPIN = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end:\n    pass\n"


@pytest.mark.slow
def test_a_scenario_beside_two_busy_processes_is_contended(write_suite, tmp_path):
    suite = write_suite(
        """
        name: busy
        defaults: {measure: {warmup_rounds: 2, min_rounds: 20, max_time_s: 2.0}}
        matrix: {model: [tiny_mlp], threads: [2]}
        """
    )
    # Without them the field is there too (test_faults.py's full-disk run checks it): on this shared
    # machine no "quiet" verdict can be asserted.
    run = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(suite), "--no-history"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spinners = []
    try:
        # The spinners start once the worker is loading its model (not during its interpreter's start-up)
        # and stop once the row is written (not during the report): the same load, less waiting.
        events = tmp_path / "reports"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and run.poll() is None and not spinners:
            if list(events.glob("*/workers/*/events.jsonl")):
                spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]  # each bounded: 120 s
            time.sleep(0.02)
        while time.monotonic() < deadline and run.poll() is None:
            found = list(events.glob("*/results.jsonl"))
            if found and found[0].read_text().endswith("\n"):
                break
            time.sleep(0.05)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert spinners, "the worker never started"
    [row] = load_run(next(events.glob("*/results.jsonl")).parent).records
    assert row.contention.verdict == "contended", row.contention
    assert "CONTENDED" in stderr and "ok (contended)" in stdout
