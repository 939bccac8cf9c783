"""Server mode's load generator: open-loop Poisson arrivals and the search for the highest rate within an SLO.

As in MLPerf LoadGen's Server scenario:
- Arrivals are a Poisson process at the offered rate, scheduled before the step starts and
  sent at their scheduled times whatever the instances are doing (open loop).
- A request's latency runs from its *scheduled* arrival to the end of its inference, so a
  generator held up by a stalled system cannot hide the queueing (no coordinated omission);
  how late the generator itself sent requests is measured too (`send_lag_p99_s`).
- A step lasts at least `min_duration_s` and has at least `min_requests` requests; one
  that cannot (it would run past `max_duration_s`) is invalid, and says so.
- The search widens the rate exponentially (x2) from a start rate until a step fails,
  then bisects between the highest pass and the lowest failure.
- p99 is the nearest-rank percentile (bench.stats) over every scheduled request of the
  step; a request unfinished at the drain deadline counts as slower than all finished ones.

The generator sleeps until each scheduled time (it never spins) and writes due requests
in bursts, one write per burst, so its own CPU cost stays small; that cost is measured
(time.thread_time) and recorded with every step.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from bench.record import ServerStep
from bench.stats import nearest_rank

REQUEST_BYTES = 8  # bench.instance.REQUEST: one little-endian uint64 request number
BURST = 512  # requests per write: 4096 bytes = PIPE_BUF, so a write is atomic
_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30


@dataclass(frozen=True)
class StepLimits:
    min_duration_s: float
    min_requests: int
    max_duration_s: float


def poisson_schedule(rate_per_s: float, limits: StepLimits, seed: int) -> list[float]:
    """Arrival offsets (seconds from the step's start) of a Poisson process at `rate_per_s`.

    Arrivals continue until the step has lasted min_duration_s *and* has min_requests
    requests, or until max_duration_s (then the step is too short or has too few).
    """
    if not rate_per_s > 0:
        raise ValueError(f"rate must be > 0, got {rate_per_s}")
    rng = random.Random(seed)
    offsets: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate_per_s)
        if t > limits.max_duration_s:
            return offsets
        offsets.append(t)
        if t >= limits.min_duration_s and len(offsets) >= limits.min_requests:
            return offsets


@contextlib.contextmanager
def precise_sleep() -> Iterator[None]:
    """Timer slack of 1 µs for this thread (Linux; default 50 µs), so sleeps end when asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        previous = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
        changed = previous > 0 and libc.prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0) == 0
    except (OSError, AttributeError):
        changed = False
    try:
        yield
    finally:
        if changed:
            libc.prctl(_PR_SET_TIMERSLACK, previous, 0, 0, 0)


def send_schedule(fd: int, scheduled: Sequence[float], sleep: Callable[[float], None] = time.sleep) -> array:
    """Write request number i to `fd` at time.monotonic() == scheduled[i]; returns each send's time.

    Sleeps until the next request is due; every request already due goes out in one write.
    A blocking write (a full pipe) delays later sends: their lateness counts in their latency.
    """
    n = len(scheduled)
    sent = array("d", bytes(8 * n))
    i = 0
    while i < n:
        now = time.monotonic()
        if scheduled[i] > now:
            sleep(scheduled[i] - now)
            continue
        j = i + 1
        while j < n and j - i < BURST and scheduled[j] <= now:
            j += 1
        os.write(fd, b"".join(k.to_bytes(REQUEST_BYTES, "little") for k in range(i, j)))
        after = time.monotonic()
        for k in range(i, j):
            sent[k] = after
        i = j
    return sent


@dataclass(frozen=True)
class StepTimes:
    """What one step measured, per request (time.monotonic seconds; 0.0 = never started / finished)."""

    scheduled: Sequence[float]
    sent: Sequence[float]
    started: Sequence[float]
    ended: Sequence[float]
    step_start: float  # the schedule's origin
    drain_end: float  # when the generator stopped waiting for unfinished requests


def evaluate_step(
    rate_per_s: float,
    times: StepTimes,
    limits: StepLimits,
    slo_p99_s: float,
    *,
    loadgen_cpu_s: float,
    wall_s: float,
    instances_cpu_s: float | None,
    seed: int,
) -> ServerStep:
    """A step's figures and verdict: valid (long enough, enough requests) and passed (p99 within the SLO)."""
    n = len(times.scheduled)
    duration_s = (times.scheduled[-1] - times.step_start) if n else 0.0
    finished = [i for i in range(n) if times.ended[i] > 0.0]
    # Unfinished requests are slower than any finished one: each has waited at least until the
    # drain ended, and will take at least as long as the slowest finished one. A lower bound.
    slowest = max((times.ended[i] - times.scheduled[i] for i in finished), default=0.0)
    latencies = sorted(
        [(times.ended[i] - times.scheduled[i], False) for i in finished]
        + [(max(times.drain_end - times.scheduled[i], slowest), True) for i in range(n) if times.ended[i] <= 0.0],
        key=lambda pair: (pair[1], pair[0]),
    )

    def percentile(p: float) -> tuple[float | None, bool]:
        return nearest_rank(latencies, p) if latencies else (None, False)

    p50, p50_bound = percentile(50)
    p90, p90_bound = percentile(90)
    p99, p99_bound = percentile(99)
    waits = sorted(times.started[i] - times.scheduled[i] for i in finished)
    services = sorted(times.ended[i] - times.started[i] for i in finished)
    lags = sorted(times.sent[i] - times.scheduled[i] for i in range(n) if times.sent[i] > 0.0)
    last_end = max((times.ended[i] for i in finished), default=times.step_start)
    span_s = max(last_end, times.scheduled[-1] if n else 0.0) - times.step_start

    reasons = []
    if duration_s < limits.min_duration_s:
        reasons.append(f"too short: {duration_s:.2f} s < {limits.min_duration_s:g} s")
    if n < limits.min_requests:
        reasons.append(
            f"too few requests: {n} < {limits.min_requests} within step_max_duration_s "
            f"({limits.max_duration_s:g} s) at {rate_per_s:.4g}/s"
        )
    valid = not reasons
    passed = valid and p99 is not None and not p99_bound and p99 <= slo_p99_s
    if p99 is not None and not (p99 <= slo_p99_s and not p99_bound):
        bound = f"{p99 * 1e3:.3g} ms"
        if p99_bound:
            bound = f"at least {bound} ({n - len(finished)} requests unfinished)"
        reasons.append(f"p99 {bound} over the SLO {slo_p99_s * 1e3:g} ms")
    return ServerStep(
        rate_per_s=rate_per_s,
        requests=n,
        completed=len(finished),
        duration_s=duration_s,
        achieved_per_s=len(finished) / span_s if span_s > 0 else 0.0,
        latency_p50_s=p50,
        latency_p90_s=p90,
        latency_p99_s=p99,
        latency_max_s=latencies[-1][0] if latencies else None,
        p99_lower_bound=p99_bound,
        p50_lower_bound=p50_bound,
        p90_lower_bound=p90_bound,
        wait_p99_s=nearest_rank(waits, 99) if waits else None,
        service_p99_s=nearest_rank(services, 99) if services else None,
        send_lag_p99_s=nearest_rank(lags, 99) if lags else None,
        loadgen_cpu_s=loadgen_cpu_s,
        loadgen_cpu_fraction=loadgen_cpu_s / wall_s if wall_s > 0 else 0.0,
        instances_cpu_s=instances_cpu_s,
        valid=valid,
        passed=passed,
        reasons=reasons,
        seed=seed,
    )


@dataclass(frozen=True)
class SearchResult:
    max_rate_per_s: float | None  # the highest passing rate; None when no step passed
    stop_reason: str
    steps: list[ServerStep]


def search_max_rate(
    run_step: Callable[[float, int], ServerStep],
    *,
    start_rate_per_s: float,
    tolerance: float,
    max_steps: int,
    min_rate_per_s: float = 0.0,
    min_rate_why: str = "the lowest rate to try",
) -> SearchResult:
    """Widen the rate x2 until a step fails (or halve it until one passes), then bisect.

    `run_step(rate, index)` measures one step. Stops when (lowest failure - highest pass) /
    highest pass <= tolerance, when a step is invalid (too few requests: a lower rate cannot
    do better within the step's time limit), when halving would go below min_rate_per_s
    with nothing passed yet (the p99 at low load is over the SLO), or after max_steps.
    """
    steps: list[ServerStep] = []
    passed: float | None = None  # highest passing rate
    failed: float | None = None  # lowest failing rate
    rate = start_rate_per_s
    while True:
        if len(steps) >= max_steps:
            reason = f"stopped after max_steps ({max_steps})"
            break
        step = run_step(rate, len(steps))
        steps.append(step)
        if not step.valid:
            reason = f"stopped at an invalid step ({'; '.join(step.reasons)})"
            break
        if step.passed:
            passed = rate
        else:
            failed = rate
        if passed is None:
            if rate / 2 < min_rate_per_s:
                reason = f"stopped: halving again would go below {min_rate_per_s:.4g}/s, {min_rate_why}"
                break
            rate /= 2
        elif failed is None:
            rate *= 2
        elif (failed - passed) / passed <= tolerance:
            reason = (
                f"converged: {passed:.4g}/s passed and {failed:.4g}/s failed, within the tolerance of {tolerance:.0%}"
            )
            break
        else:
            rate = (passed + failed) / 2
    if passed is None and failed is not None:
        lowest = min(steps, key=lambda s: s.rate_per_s)
        p99 = f"p99 {lowest.latency_p99_s * 1e3:.3g} ms" if lowest.latency_p99_s is not None else "no p99"
        reason += f"; no step met the SLO (the lowest rate tried, {lowest.rate_per_s:.4g}/s, had {p99})"
    return SearchResult(passed, reason, steps)


def next_seed(seed: int, index: int) -> int:
    """Each step's schedule has its own seed, so a run is reproducible step by step."""
    return seed * 1000 + index
