"""Server mode's load generator: open-loop Poisson arrivals and the search for the highest rate within an SLO.

As in MLPerf LoadGen's Server scenario:
- Arrivals are a Poisson process at the offered rate, scheduled before the step starts and
  sent at their scheduled times whatever the instances are doing (open loop).
- A request's latency runs from its *scheduled* arrival to the end of its inference, so a
  generator held up by a stalled system cannot hide the queueing (no coordinated omission);
  how late the generator itself sent requests is measured too (`send_lag_p99_s`).
- A step's verdict is bench.capacity.verdict's binomial rule on the number of requests over the SLO
  (LoadGen's early stopping). A step lasts at least `min_duration_s` and then runs until its
  verdict is decided, at most `max_duration_s`: its length follows from the rate and from
  what the p99 needs (at 95 % confidence, at least 299 requests, all within the SLO, to pass).
  A step still undecided at its limit is `inconclusive`, which the search treats as not passed.
- The search widens the rate exponentially (x2) from a start rate until a step does not
  pass, then bisects between the highest pass and the lowest non-pass; the answer is then
  re-run as a longer confirming step, and only a confirmed rate is the answer.
- p99 is the nearest-rank percentile (bench.results.stats) over every request sent in the step; a
  request unfinished at the drain deadline counts as slower than all finished ones, and as
  over the SLO.

The generator sleeps until each scheduled time (it never spins) and writes due requests
in bursts, one write per burst, so its own CPU cost stays small; that cost is measured
(time.thread_time) and recorded with every step.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bench.capacity.verdict import FAIL, PASS, UNDECIDED, Verdict, decide
from bench.results.record import ServerStep
from bench.results.stats import nearest_rank

REQUEST_BYTES = 8  # bench.capacity.instance.REQUEST: one little-endian uint64 request number
BURST = 512  # requests per write: 4096 bytes = PIPE_BUF, so a write is atomic
CHECK_EVERY_S = 0.25  # how often a running step checks whether its verdict is decided
MAX_STEP_REQUESTS = 2_000_000  # a step's schedule holds at most this many arrivals (48 MB of step file)
INCONCLUSIVE = "inconclusive"
_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30


@dataclass(frozen=True)
class StepLimits:
    min_duration_s: float  # a step runs at least this long ...
    min_requests: int  # ... and sends at least this many requests (0: the verdict alone decides) ...
    max_duration_s: float  # ... then until its verdict is decided, at most this long
    confidence: float = 0.95  # of the verdict (bench.capacity.verdict)


def poisson_schedule(rate_per_s: float, limits: StepLimits, seed: int) -> list[float]:
    """Arrival offsets (seconds from the step's start) of a Poisson process at `rate_per_s`, up to max_duration_s
    and the first arrival after it: a step that sends its whole schedule lasts at least max_duration_s, so one
    whose min_duration_s is its max_duration_s (a capped confirming step) is long enough, not "too short".

    The step usually ends sooner, when its verdict is decided (send_schedule's `stop`).
    """
    if not rate_per_s > 0:
        raise ValueError(f"rate must be > 0, got {rate_per_s}")
    rng = np.random.default_rng(seed)
    chunks, t, count = [], 0.0, 0
    while t <= limits.max_duration_s and count < MAX_STEP_REQUESTS:
        size = int(min(MAX_STEP_REQUESTS - count, max(64, rate_per_s * limits.max_duration_s * 1.1 + 64)))
        offsets = t + np.cumsum(rng.exponential(1 / rate_per_s, size))
        chunks.append(offsets)
        t, count = float(offsets[-1]), count + size
    offsets = np.concatenate(chunks)
    within = int(np.searchsorted(offsets, limits.max_duration_s, side="right"))
    return offsets[: within + 1][:MAX_STEP_REQUESTS].tolist()


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


def send_schedule(
    fd: int,
    scheduled: Sequence[float],
    sleep: Callable[[float], None] = time.sleep,
    stop: Callable[[int], bool] | None = None,
) -> array:
    """Write request number i to `fd` at time.monotonic() == scheduled[i]; returns each send's time (0.0: unsent).

    Sleeps until the next request is due; every request already due goes out in one write.
    A blocking write (a full pipe) delays later sends: their lateness counts in their latency.
    Every CHECK_EVERY_S, `stop(number sent so far)` may end the step early (its verdict is decided).
    """
    n = len(scheduled)
    sent = array("d", bytes(8 * n))
    i = 0
    next_check = time.monotonic() + CHECK_EVERY_S
    while i < n:
        now = time.monotonic()
        if stop is not None and now >= next_check:
            next_check = now + CHECK_EVERY_S
            if stop(i):
                break
        if scheduled[i] > now:
            sleep(min(scheduled[i] - now, CHECK_EVERY_S) if stop is not None else scheduled[i] - now)
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


def running_verdict(
    scheduled: np.ndarray, ended: np.ndarray, sent: int, now: float, slo_p99_s: float, confidence: float
) -> str:
    """The verdict of a running step on its first `sent` requests, whatever the ones in flight turn out to be.

    A request in flight (unfinished, and not yet older than the SLO) may still end either side
    of it: PASS only if the step passes with all of them over the SLO, FAIL only if it fails
    with all of them within it, so the verdict cannot change when they end.
    """
    scheduled, ended = scheduled[:sent], ended[:sent]
    finished = ended > 0
    late = np.count_nonzero(finished & (ended - scheduled > slo_p99_s))
    waiting = ~finished
    overdue = np.count_nonzero(waiting & (now - scheduled > slo_p99_s))
    in_flight = np.count_nonzero(waiting) - overdue
    if decide(int(late + overdue + in_flight), sent, confidence) == PASS:
        return PASS
    if decide(int(late + overdue), sent, confidence) == FAIL:
        return FAIL
    return UNDECIDED


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
    missed: Sequence[bool] | None = None,
) -> ServerStep:
    """A step's figures and verdict: valid (long enough, enough requests) and passed (p99 within the SLO).

    `missed`: per request, whether it missed the SLO, where that is not its latency against slo_p99_s
    (LLM server mode: TTFT or TPOT over its bound, bench.capacity.llm); the latencies are then figures only.
    """
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

    if missed is None:
        over = sum(1 for latency, unfinished in latencies if unfinished or latency > slo_p99_s)
    else:
        over = sum(missed)
    verdict = Verdict.of(over, n, limits.confidence)
    reasons = []
    if duration_s < limits.min_duration_s:
        reasons.append(f"too short: {duration_s:.2f} s < {limits.min_duration_s:g} s")
    if n < limits.min_requests:
        reasons.append(
            f"too few requests: {n} < {limits.min_requests} within step_max_duration_s "
            f"({limits.max_duration_s:g} s) at {rate_per_s:.4g}/s"
        )
    valid = not reasons
    passed = valid and verdict.verdict == PASS
    if verdict.verdict != PASS:
        why = verdict.reason(limits.confidence)
        if verdict.verdict == UNDECIDED:
            why = f"{INCONCLUSIVE} after {duration_s:.1f} s (step_max_duration_s {limits.max_duration_s:g} s); {why}"
        reasons.append(why)
    if missed is None and p99 is not None and not (p99 <= slo_p99_s and not p99_bound):
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
        over_slo=over,
        over_slo_upper_bound=verdict.upper,
        over_slo_lower_bound=verdict.lower,
        confidence=limits.confidence,
        verdict=INCONCLUSIVE if verdict.verdict == UNDECIDED else verdict.verdict,
        verdict_reason=verdict.reason(limits.confidence),
    )


def progress_line(step: ServerStep, kind: str | None = None) -> str:
    """One line per finished step for the console: its kind (default: step or confirming step), rate, requests,
    over the SLO, p99, verdict."""
    p99 = "-" if step.latency_p99_s is None else f"{step.latency_p99_s * 1e3:.3g} ms"
    kind = kind or ("confirming step" if step.confirmation else "step")
    return (
        f"{kind} at {step.rate_per_s:,.4g}/s: {step.requests} requests in {step.duration_s:.1f} s, "
        f"{step.over_slo} over the SLO, p99 {p99}: {step.verdict if step.valid else 'invalid'}"
    )


@dataclass(frozen=True)
class SearchResult:
    max_rate_per_s: float | None  # the highest passing rate (confirmed when the search had `confirm`); None: none
    stop_reason: str
    steps: list[ServerStep]  # confirming steps included (ServerStep.confirmation)
    confirmed: bool = False


MAX_CONFIRMATIONS = 3


def search_max_rate(
    run_step: Callable[[float, int], ServerStep],
    *,
    start_rate_per_s: float,
    tolerance: float,
    max_steps: int,
    min_rate_per_s: float = 0.0,
    min_rate_why: str = "the lowest rate to try",
    confirm: Callable[[float, int, ServerStep], ServerStep] | None = None,
) -> SearchResult:
    """Widen the rate x2 until a step does not pass (or halve it until one passes), bisect, then confirm.

    `run_step(rate, index)` measures one step; a step that is not passed (failed or
    inconclusive) counts as a failure. The search stops when (lowest failure - highest pass) /
    highest pass <= tolerance, at an invalid step (too short, too few requests), when halving
    would go below min_rate_per_s with nothing passed yet, or after max_steps search steps.
    Then `confirm(rate, index, passing step)` re-runs the highest pass as a longer step: when
    it does not pass, that rate counts as failed and the search goes on below it, at most
    MAX_CONFIRMATIONS times. Without `confirm` the highest pass is the answer, unconfirmed.
    """
    steps: list[ServerStep] = []
    passed: float | None = None  # highest passing rate not refuted by a confirmation
    failed: float | None = None  # lowest rate that did not pass
    rate = start_rate_per_s
    confirmations = 0
    notes: list[str] = []
    ended = ""  # why the search itself cannot go on (then only confirmations run)

    def search_steps() -> int:
        return sum(not s.confirmation for s in steps)

    while True:
        reason = ended
        if ended:
            pass
        elif passed is not None and failed is not None and (failed - passed) / passed <= tolerance:
            reason = (
                f"converged: {passed:.4g}/s passed and {failed:.4g}/s did not, within the tolerance of {tolerance:.0%}"
            )
        elif search_steps() >= max_steps:
            reason = f"stopped after max_steps ({max_steps})"
        elif passed is None and failed is not None and failed <= min_rate_per_s * (1 + 1e-9):
            reason = f"stopped: halving again would go below {min_rate_per_s:.4g}/s, {min_rate_why}"
        else:
            step = run_step(rate, len(steps))
            steps.append(step)
            if not step.valid:
                reason = f"stopped at an invalid step ({'; '.join(step.reasons)})"
            elif step.passed:
                passed = rate
            else:
                failed = rate
            if not reason:
                # Halving stops at min_rate_per_s: the floor itself is tried once.
                halved = max(rate / 2, min_rate_per_s)
                rate = rate * 2 if failed is None else (halved if passed is None else (passed + failed) / 2)
                continue
        if reason.startswith("stopped"):
            ended = reason
        # The search has its answer (or none): confirm it.
        if passed is None or confirm is None:
            break
        if confirmations >= MAX_CONFIRMATIONS:
            notes.append(f"no rate confirmed within {MAX_CONFIRMATIONS} confirming steps")
            passed = None
            break
        confirmations += 1
        passing = max((s for s in steps if s.passed and s.rate_per_s == passed), key=lambda s: s.duration_s)
        check = dataclasses.replace(confirm(passed, len(steps), passing), confirmation=True)
        steps.append(check)
        if check.passed:
            notes.append(f"{passed:.4g}/s confirmed by a {check.duration_s:.1f} s step of {check.requests} requests")
            break
        notes.append(f"{passed:.4g}/s passed but not its confirming step ({check.verdict})")
        failed = passed
        lower = [s.rate_per_s for s in steps if s.passed and not s.confirmation and s.rate_per_s < failed]
        passed = max(lower) if lower else None
        rate = max(failed / 2, min_rate_per_s) if passed is None else (passed + failed) / 2
    reason = "; ".join([reason, *notes])
    if not any(s.passed for s in steps) and steps:
        lowest = min(steps, key=lambda s: s.rate_per_s)
        p99 = f"p99 {lowest.latency_p99_s * 1e3:.3g} ms" if lowest.latency_p99_s is not None else "no p99"
        reason += f"; no step met the SLO (the lowest rate tried, {lowest.rate_per_s:.4g}/s, had {p99})"
    return SearchResult(passed, reason, steps, confirmed=confirm is not None and passed is not None)


def next_seed(seed: int, index: int) -> int:
    """Each step's schedule has its own seed, so a run is reproducible step by step."""
    return seed * 1000 + index
