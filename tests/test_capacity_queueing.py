"""Server mode against queueing theory, and a slow model end to end, with a sleep-based synthetic service.

tests/support/sleepy_service.py sleeps a fixed time per call and uses almost no CPU, so an instance
of it is an M/D/1 server; a busy host only delays its wake-ups, which makes latencies longer,
never shorter. How close a measured p99 comes to the M/D/1 prediction depends on how busy the
host is (on the shared 2-core VM, 3.5x the prediction at half load while other jobs ran), so
that comparison is a benchmark (benchmarks/capacity_md1.py), not a test; here only what a busy
host cannot break.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from bench.capacity.queueing import md1_p99_s, md1_rate_at_slo
from bench.results.record import ResultRecord

pytestmark = pytest.mark.serial  # capacity searches judge latencies against an SLO on pinned cores

HERE = Path(__file__).parent


def test_the_md1_reference_matches_known_values():
    # M/D/1 mean wait is rho D / (2 (1 - rho)) (Pollaczek-Khinchine); its p99 lies far below M/M/1's.
    assert md1_p99_s(50.0, 0.01) == pytest.approx(0.0434, rel=0.05)  # rho 0.5: 4.3 D
    assert md1_p99_s(50.0, 0.01) < 0.5 * (0.01 / 0.5 * math.log(100))  # M/M/1: 9.2 D
    assert md1_p99_s(0.5, 0.01) == pytest.approx(0.01)  # rho 0.005: under 1 % of requests wait at all
    assert md1_rate_at_slo(0.0205, 0.1, requests=20_000) == pytest.approx(26.6, rel=0.05)


@pytest.mark.slow
def test_a_20_ms_model_gets_a_confirmed_max_rate_with_default_settings(run_cli, write_suite, tmp_path):
    shutil.copy(
        HERE / "support" / "sleepy_service.py", tmp_path / "sleepy_service.py"
    )  # the suite's folder is on the path
    suite = write_suite(
        textwrap.dedent("""\
        name: slow
        defaults:
          measure: {warmup_rounds: 1, min_rounds: 10, max_time_s: 0.2}
          capacity: {slo_p99_ms: 200, layouts: [1x1], sweep: false, batching: {max_batch: 8, max_delay_ms: 10}}
        matrix:
          model: [{name: sleepy, factory: "sleepy_service:build", kwargs: {ms: 20, per_sample_ms: 1}, input_shape: [4]}]
        """)
    )
    done = run_cli("run", str(suite), "--reports", "reports")
    assert done.returncode == 0, done.stderr
    assert "capacity 1x1: step at " in done.stderr and "capacity 1x1: confirming step at " in done.stderr
    assert " over the SLO, p99 " in done.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    (line,) = (run_dir / "results.jsonl").read_text().splitlines()
    figures = ResultRecord.from_dict(json.loads(line)).capacity
    (layout,) = figures.layouts
    server = layout.server
    assert server.confirmed and server.max_rate_per_s is not None, server.stop_reason
    assert server.verdict_rule.startswith("p99 verdict: pass when the one-sided Clopper-Pearson")
    for step in server.steps:
        assert step.verdict in ("pass", "fail", "inconclusive") and step.over_slo is not None
        assert step.over_slo_lower_bound <= step.over_slo / step.requests <= step.over_slo_upper_bound
    spare = sorted(os.sched_getaffinity(0))[1:] or None  # the instance has the first usable core
    assert all(s.loadgen_cores == spare for s in server.steps), [s.loadgen_cores for s in server.steps]
    confirming = [s for s in server.steps if s.confirmation]
    assert confirming[-1].passed and confirming[-1].rate_per_s == server.max_rate_per_s
    # Never above where the M/D/1 p99 crosses the SLO (with the fastest call as the service time, the
    # most optimistic queue): a pass needs the true over-SLO share clearly below 1 %, and a busy host
    # only makes latencies longer. How far below is a benchmark's figure (benchmarks/capacity_md1.py).
    crossing = md1_rate_at_slo(layout.closed_loop.latency_s.min, server.slo_p99_s, requests=20_000)
    assert server.max_rate_per_s <= 1.1 * crossing, (server.max_rate_per_s, crossing)

    # Dynamic batching: 8 requests in 28 ms against one in 21 ms; a busy host delays both alike.
    batched = layout.batched_server
    assert batched.confirmed and batched.max_rate_per_s >= 2 * server.max_rate_per_s, batched.stop_reason
    assert " batched)" in done.stderr + done.stdout  # the console's capacity line
    at_rate = [s for s in batched.steps if s.passed and s.rate_per_s == batched.max_rate_per_s]
    assert any(len(s.batch_size_counts) > 1 for s in at_rate), [s.batch_size_counts for s in at_rate]
    assert 'id="batching-table"' in (run_dir / "report.html").read_text()

    plan = run_cli("plan", "--run", str(run_dir), "--slo-p99-ms", "200", "--target-qps", "1000")
    assert plan.returncode == 0, plan.stderr
    assert "Verdict rule: p99 verdict" in plan.stdout and f"{server.max_rate_per_s:,.0f}" in plan.stdout
