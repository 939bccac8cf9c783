"""Server mode's load generator (capacity.loadgen): schedules, step verdicts and the rate search, without instances."""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

import numpy as np
import pytest

from bench.capacity.loadgen import (
    MAX_CONFIRMATIONS,
    StepLimits,
    StepTimes,
    evaluate_step,
    poisson_schedule,
    progress_line,
    running_verdict,
    search_max_rate,
    send_schedule,
)
from bench.results.record import ServerStep

pytestmark = pytest.mark.serial  # the sender's sleeps and CPU time are checked

LIMITS = StepLimits(min_duration_s=1.0, min_requests=0, max_duration_s=10.0)


def test_poisson_schedule_runs_to_the_step_limit_and_is_seeded():
    fast = poisson_schedule(1000, LIMITS, seed=1)  # the step usually stops sooner: when its verdict is decided
    # ... and one arrival past it, so a step that sends them all lasts its max_duration_s
    assert 9.9 < fast[-2] <= 10.0 < fast[-1] and 9000 < len(fast) < 11000
    assert fast == poisson_schedule(1000, LIMITS, seed=1) != poisson_schedule(1000, LIMITS, seed=2)
    assert all(b > a for a, b in zip(fast, fast[1:], strict=False))
    gaps = [b - a for a, b in zip([0.0, *fast], fast, strict=False)]
    # Exponential gaps: mean 1/rate, standard deviation equal to the mean.
    assert statistics.fmean(gaps) == pytest.approx(1e-3, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(1e-3, rel=0.05)
    assert min(gaps) > 0
    slow = poisson_schedule(0.5, LIMITS, seed=1)
    assert len(slow) < 15 and all(t <= 10.0 for t in slow[:-1]) and slow[-1] > 10.0


def test_a_step_whose_minimum_is_its_time_limit_is_long_enough_when_it_sends_its_whole_schedule():
    # a confirming step capped at step_max_duration_s: its schedule once stopped just short of the
    # limit, and every such step was invalid ("too short: 4.00 s < 4 s")
    limits = StepLimits(min_duration_s=4.0, min_requests=100, max_duration_s=4.0)
    step = _evaluate(poisson_schedule(500, limits, seed=3), service_s=0.001, limits=limits)
    assert step.valid and step.passed, step.reasons
    assert step.duration_s >= 4.0


def test_a_step_that_cannot_reach_its_minimum_within_the_time_limit_is_too_short_and_too_few():
    offsets = poisson_schedule(10, StepLimits(1.0, 200, 2.0), seed=0)
    assert offsets[-2] <= 2.0 < offsets[-1] and len(offsets) < 200
    step = _evaluate(offsets, service_s=0.001, limits=StepLimits(3.0, 200, 2.0))
    assert not step.valid and not step.passed
    assert any(r.startswith("too short") for r in step.reasons)
    assert any(r.startswith("too few requests") for r in step.reasons)


def _evaluate(offsets, *, service_s, limits=LIMITS, slo_s=0.01, late_s=0.0, unfinished=(), drain_s=0.5):
    """A step in which every request waits behind the one before it on one instance."""
    scheduled = [100.0 + t for t in offsets]
    sent = [t + late_s for t in scheduled]
    started, ended, free_at = [], [], 0.0
    for i, t in enumerate(sent):
        start = max(t, free_at)
        free_at = start + service_s
        started.append(start if i not in unfinished else 0.0)
        ended.append(free_at if i not in unfinished else 0.0)
    times = StepTimes(scheduled, sent, started, ended, 100.0, drain_end=scheduled[-1] + drain_s)
    return evaluate_step(
        len(offsets) / offsets[-1],
        times,
        limits,
        slo_s,
        loadgen_cpu_s=0.01,
        wall_s=offsets[-1],
        instances_cpu_s=0.5,
        seed=0,
    )


def test_latency_runs_from_the_scheduled_arrival_so_a_late_sender_cannot_hide_queueing():
    offsets = [i * 0.005 for i in range(1, 301)]  # 200/s, 1.5 s
    on_time = _evaluate(offsets, service_s=0.001)
    assert on_time.passed and on_time.latency_p99_s == pytest.approx(0.001)
    late = _evaluate(offsets, service_s=0.001, late_s=0.02)  # the generator stalled 20 ms on every request
    assert late.latency_p99_s == pytest.approx(0.021)
    assert late.send_lag_p99_s == pytest.approx(0.02)
    assert late.service_p99_s == pytest.approx(0.001)
    assert not late.passed and "p99 21 ms over the SLO 10 ms" in late.reasons


def test_p99_is_the_nearest_rank_over_every_request_and_unfinished_ones_count_as_slowest_and_over():
    offsets = [i * 0.01 for i in range(1, 201)]  # 200 requests: p99 is the 198th latency
    step = _evaluate(offsets, service_s=0.001, unfinished={7, 50})
    assert step.completed == 198 and step.requests == 200
    assert step.latency_p99_s == pytest.approx(0.001) and not step.p99_lower_bound
    # The p99 is within the SLO, but 2 of 200 over it cannot show that at most 1 % are: not a pass.
    assert step.over_slo == 2 and step.verdict == "inconclusive" and not step.passed
    assert step.over_slo_lower_bound < 0.01 < step.over_slo_upper_bound
    step = _evaluate(offsets, service_s=0.001, unfinished={7, 50, 90})
    assert step.p99_lower_bound and not step.passed
    # The unfinished request at the p99 rank waited at least until the drain deadline.
    assert step.latency_p99_s >= 0.5
    assert any("at least" in r and "3 requests unfinished" in r for r in step.reasons)


def test_a_step_passes_only_when_the_bound_on_the_share_over_the_slo_is_within_one_percent():
    offsets = [i * 0.002 for i in range(1, 1001)]  # 1,000 requests at 500/s, served in 1 ms each
    step = _evaluate(offsets, service_s=0.001, unfinished={10, 20})
    assert step.valid and step.passed and step.verdict == "pass" and step.over_slo == 2
    assert step.over_slo_upper_bound <= 0.01 and step.confidence == 0.95
    assert step.verdict_reason.startswith("pass: 2 of 1000 requests over the SLO")
    late = _evaluate(offsets, service_s=0.001, unfinished=set(range(0, 1000, 40)))  # 25 of 1,000: 2.5 %
    assert late.verdict == "fail" and late.over_slo_lower_bound > 0.01 and not late.passed
    assert any(r.startswith("fail: 25 of 1000") for r in late.reasons)


def test_an_unfinished_request_is_never_counted_faster_than_a_finished_one():
    offsets = [i * 0.01 for i in range(1, 101)]  # 100/s into one instance serving 50/s: the queue grows
    step = _evaluate(offsets, service_s=0.02, unfinished=set(range(89, 100)), drain_s=0.001)
    finished_max = 0.02 * 89 - 0.01 * 88  # request 89 (index 88) waited behind the 88 before it
    assert step.completed == 89
    assert step.latency_max_s >= finished_max - 1e-9 and step.latency_p99_s >= finished_max - 1e-9
    # p90 (rank 90 of 100) falls on the first unfinished request, p50 on a finished one
    assert step.p90_lower_bound and step.p99_lower_bound and not step.p50_lower_bound
    assert step.latency_p90_s >= finished_max - 1e-9


def test_the_search_never_goes_below_the_lowest_rate_and_says_why():
    run_step, rates = _fake_system(capacity_per_s=30)  # serves 30/s; a valid step needs 62.5/s
    result = search_max_rate(
        run_step,
        start_rate_per_s=62.5,
        tolerance=0.1,
        max_steps=20,
        min_rate_per_s=62.5,
        min_rate_why="the lowest rate whose step holds step_min_requests",
    )
    assert rates == [62.5] and result.max_rate_per_s is None
    assert "halving again would go below 62.5/s, the lowest rate whose step holds step_min_requests" in (
        result.stop_reason
    )


def _fake_system(capacity_per_s: float, floor_p99_s: float = 0.001, slo_s: float = 0.01):
    """A server whose p99 is low below `capacity_per_s` and unbounded above it."""
    rates: list[float] = []

    def run_step(rate: float, index: int) -> ServerStep:
        rates.append(rate)
        p99 = floor_p99_s if rate <= capacity_per_s else 1.0
        return ServerStep(
            rate_per_s=rate,
            requests=1000,
            completed=1000,
            duration_s=1.0,
            achieved_per_s=min(rate, capacity_per_s),
            latency_p50_s=p99,
            latency_p90_s=p99,
            latency_p99_s=p99,
            latency_max_s=p99,
            p99_lower_bound=False,
            wait_p99_s=None,
            service_p99_s=None,
            send_lag_p99_s=None,
            loadgen_cpu_s=0.0,
            loadgen_cpu_fraction=0.0,
            instances_cpu_s=None,
            valid=True,
            passed=p99 <= slo_s,
            reasons=[] if p99 <= slo_s else ["over"],
        )

    return run_step, rates


def test_the_search_widens_exponentially_until_a_step_fails_then_bisects():
    run_step, rates = _fake_system(capacity_per_s=1000)
    result = search_max_rate(run_step, start_rate_per_s=100, tolerance=0.05, max_steps=20)
    assert rates[:5] == [100, 200, 400, 800, 1600]  # x2 until 1,600 fails
    assert rates[5] == 1200  # then halfway between the highest pass and the lowest failure
    assert result.stop_reason.startswith("converged")
    assert 1000 / 1.05 <= result.max_rate_per_s <= 1000
    failed = [s.rate_per_s for s in result.steps if not s.passed]
    assert min(failed) > result.max_rate_per_s
    assert (min(failed) - result.max_rate_per_s) / result.max_rate_per_s <= 0.05


def test_the_search_halves_from_a_start_above_capacity():
    run_step, rates = _fake_system(capacity_per_s=300)
    result = search_max_rate(run_step, start_rate_per_s=2000, tolerance=0.1, max_steps=20)
    assert rates[:4] == [2000, 1000, 500, 250]
    assert 300 / 1.1 <= result.max_rate_per_s <= 300


def test_an_slo_no_rate_meets_ends_the_search_with_no_rate_and_says_why():
    run_step, rates = _fake_system(capacity_per_s=1000, floor_p99_s=0.05)  # every step's p99 is over 10 ms
    result = search_max_rate(run_step, start_rate_per_s=1000, tolerance=0.1, max_steps=20, min_rate_per_s=1000 / 32)
    assert result.max_rate_per_s is None
    assert min(rates) >= 1000 / 32 and len(rates) == 6
    assert "no step met the SLO" in result.stop_reason and "p99 50 ms" in result.stop_reason
    result = search_max_rate(run_step, start_rate_per_s=1000, tolerance=0.1, max_steps=3)
    assert result.stop_reason.startswith("stopped after max_steps (3)") and len(result.steps) == 3


def test_the_search_stops_at_an_invalid_step():
    run_step, _ = _fake_system(capacity_per_s=10)

    def too_few_below_100(rate, index):
        step = run_step(rate, index)
        if rate < 100:
            return dataclasses.replace(step, valid=False, passed=False, reasons=["too few requests"])
        return step

    result = search_max_rate(too_few_below_100, start_rate_per_s=400, tolerance=0.1, max_steps=20)
    assert [s.rate_per_s for s in result.steps] == [400, 200, 100, 50]
    assert result.max_rate_per_s is None and "invalid step (too few requests)" in result.stop_reason


def test_the_sender_writes_each_request_at_its_time_and_sleeps_in_between():
    read_fd, write_fd = os.pipe()
    try:
        start = time.monotonic() + 0.01
        scheduled = [start + i * 0.002 for i in range(50)]  # 100 ms of requests
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            time.sleep(seconds)

        cpu_started = time.thread_time()
        sent = send_schedule(write_fd, scheduled, sleep)
        cpu_s = time.thread_time() - cpu_started
        data = os.read(read_fd, 4096)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data), 8)] == list(range(50))
    assert all(s >= t for s, t in zip(sent, scheduled, strict=True))  # never early
    # It slept through the gaps rather than spinning: judged by its CPU time, since a stall of
    # a busy host makes requests due at once and so shortens the sleeps (seen in a helper's run).
    assert sleeps and cpu_s < 0.05


def test_a_running_step_stops_only_on_a_verdict_the_requests_in_flight_cannot_change():
    now, slo = 100.0, 0.01
    scheduled = np.linspace(90.0, now, 400)  # 400 sent; the last ~0.4 request per ms is still in flight
    ended = scheduled + 0.001
    ended[-3:] = 0.0  # 3 in flight, younger than the SLO
    # 0 over and 3 that may still be: a pass needs 299 with none over; 397 + 3 pending over -> not yet a pass
    assert running_verdict(scheduled, ended, 400, now, slo, 0.95) == "undecided"
    ended[-3:] = scheduled[-3:] + 0.5  # they ended, over the SLO: 3 of 400 over is neither a pass nor a fail
    assert running_verdict(scheduled, ended, 400, now + 1.0, slo, 0.95) == "undecided"
    ended[-3:] = scheduled[-3:] + 0.001
    assert running_verdict(scheduled, ended, 400, now, slo, 0.95) == "pass"
    ended[::20] += 1.0  # 20 of 400 (5 %) over the SLO
    assert running_verdict(scheduled, ended, 400, now, slo, 0.95) == "fail"
    assert running_verdict(scheduled, ended, 100, now, slo, 0.95) in ("fail", "undecided")


def test_the_search_confirms_its_answer_and_goes_below_a_rate_that_fails_confirmation():
    run_step, rates = _fake_system(capacity_per_s=1000)
    confirmed: list[float] = []

    def confirm(rate, index, passing):
        confirmed.append(rate)
        assert passing.passed and passing.rate_per_s == rate
        step = run_step(rate, index)
        if rate > 950:  # the search's passes above 950/s were luck: their longer re-runs fail
            return dataclasses.replace(step, passed=False, verdict="fail", reasons=["fail"])
        return step

    result = search_max_rate(run_step, start_rate_per_s=100, tolerance=0.05, max_steps=20, confirm=confirm)
    assert result.confirmed and result.max_rate_per_s <= 950 and confirmed[-1] == result.max_rate_per_s
    assert len(confirmed) >= 2 and confirmed[0] > 950
    assert [s.rate_per_s for s in result.steps if s.confirmation] == confirmed
    assert "passed but not its confirming step" in result.stop_reason and "confirmed by" in result.stop_reason
    never = search_max_rate(
        run_step,
        start_rate_per_s=100,
        tolerance=0.05,
        max_steps=20,
        confirm=lambda rate, index, passing: dataclasses.replace(run_step(rate, index), passed=False, verdict="fail"),
    )
    assert never.max_rate_per_s is None and not never.confirmed
    assert sum(s.confirmation for s in never.steps) == MAX_CONFIRMATIONS
    assert f"no rate confirmed within {MAX_CONFIRMATIONS} confirming steps" in never.stop_reason


def test_progress_names_rate_requests_over_slo_p99_and_verdict():
    step = _evaluate([i * 0.002 for i in range(1, 1001)], service_s=0.001)
    assert progress_line(step) == "step at 500/s: 1000 requests in 2.0 s, 0 over the SLO, p99 1 ms: pass"
    assert progress_line(step, "stall floor step").startswith("stall floor step at 500/s: 1000 requests")


def test_halving_stops_at_the_lowest_rate_and_tries_it_once():
    run_step, rates = _fake_system(capacity_per_s=7)  # serves 7/s; the floor is 6.2/s
    result = search_max_rate(run_step, start_rate_per_s=12.4, tolerance=0.1, max_steps=20, min_rate_per_s=6.2)
    assert rates[:2] == [12.4, 6.2] and result.max_rate_per_s is not None
    run_step, rates = _fake_system(capacity_per_s=5)
    result = search_max_rate(run_step, start_rate_per_s=12.4, tolerance=0.1, max_steps=20, min_rate_per_s=6.2)
    assert rates == [12.4, 6.2] and result.max_rate_per_s is None and "below 6.2/s" in result.stop_reason
