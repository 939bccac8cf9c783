"""Capacity: what one host serves for a scenario, measured with several pinned instances at once.

A *layout* N x T is N instance processes (bench.capacity.instance), each pinned with
os.sched_setaffinity to its own T cores and running T threads. For each thread width T
the parent starts the largest N asked for, all at once, and measures with the first k of
them, for k = 1, 2, 4 ... N (the instance-count sweep that the planner's scaling
assumption rests on):

1. closed loop: every instance calls the model back to back on the scenario's batch, all
   started together, for `duration_s`: per-instance and aggregate throughput and latency.
   With one instance this is MLPerf's SingleStream: the latency floor of that width.
2. memory: RSS, USS and PSS of every instance (psutil memory_full_info), so pages the
   instances share (libraries, mmap'd weights) are not counted once per instance.
3. server: Poisson arrivals from bench.capacity.loadgen through one pipe that all k instances read
   (a free instance takes the next request), searching for the highest rate whose p99
   meets the SLO by bench.capacity.verdict's rule, each step running until its verdict is decided;
   the answer is confirmed by a longer step; when the answer is none or low against M/D/1
   queueing, a step at a low utilisation measures the host's stall floor (bench.capacity.stalls);
   then one short step at a tenth of the confirmed rate (the serving overhead at low load).
4. offline: as the closed loop, with large batches: the most samples per second.

A generate: scenario measures 1, 2 and LLM server mode (bench.capacity.llm, passed in as `serve`) instead of 3
and 4: generation requests, judged on time to first token and time per output token.

The generator runs in this process: pinned to the usable cores no active instance has
when there are any (recorded as `loadgen_cores`), else unpinned, competing with the instances
for the cores; each step records its CPU time. Raw per-call and per-request times are kept in
capacity/<scenario>/<layout>.npz.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import math
import mmap
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.capacity.instance import (
    STEP_FIELDS,
    STOP,
    Batching,
    ClosedLoop,
    ClosedLoopDone,
    GenerationSetup,
    InstanceError,
    InstanceProcess,
    InstanceSpec,
    Ready,
    Serve,
    ServeDone,
    ServeGenerate,
    Serving,
    step_file_slots,
    step_region,
)
from bench.capacity.loadgen import (
    StepLimits,
    StepTimes,
    evaluate_step,
    next_seed,
    poisson_schedule,
    precise_sleep,
    progress_line,
    running_verdict,
    search_max_rate,
    send_schedule,
)
from bench.capacity.stalls import FLOOR_REQUESTS, floor_rate, headline, needs_floor, stall_floor
from bench.capacity.verdict import RULE, UNDECIDED, fewest_to_pass
from bench.format.units import duration_readable
from bench.measure.child import child_env
from bench.measure.memory import cpu_count, read_status_bytes
from bench.measure.zygote import ZygoteWorkers
from bench.results.record import (
    CapacityFigures,
    ClosedLoopFigures,
    InstanceMemory,
    InstanceRun,
    LayoutFigures,
    ServerFigures,
    ServerStep,
)
from bench.results.stats import PERCENTILE_RULE, LatencyStats, nearest_rank
from bench.suite.scenarios import LAYOUT_RE, BatchingPolicy, CapacityPolicy, GenerationMix, Scenario, SeqLenMix

PIPE_BYTES = 1 << 20  # room for 131072 queued requests before the generator's write blocks
START_DELAY_S = 0.05  # instances get their command, then all start at the same monotonic time
LOW_LOAD_FRACTION = 0.1
PASSABLE_MARGIN = 1.25  # Poisson counts vary: aim 25 % above the fewest requests a passing step needs
CONFIRM_FACTOR = 2  # a confirming step lasts at least this many times the step that passed ...
# ... and at least this long (capped at step_max_duration_s): a 1 s step on a host with bursty
# background load can pass a rate that a longer run does not (seen against LoadGen's 30 s runs).
CONFIRM_MIN_S = 10.0
LOW_LOAD_CEILING = 0.5  # a "low-load" step above half the capacity would not be one
LOW_LOAD_REQUESTS, LOW_LOAD_MAX_S = 300, 5.0  # the low-load step: informational, so short
# Server mode halves a failing rate at most down to start / 32: far below capacity the p99 is the
# serving overhead plus single-stream latency, and halving further only makes the steps longer.
MIN_RATE_DIVISOR = 32
_DRAIN_MIN_S = 0.5

Phase = Callable[[str], None]
# A server mode other than the forward-call search (bench.capacity.llm's for a generate: scenario): given the
# group, the instance count k, phase, log and the raw arrays to fill, the fields of LayoutFigures it
# measured (offline and the forward-call server mode are then not measured).
ServeMode = Callable[["InstanceGroup", int, Phase, Phase, dict], dict]


@dataclass(frozen=True)
class Layout:
    instances: int
    threads: int

    @property
    def name(self) -> str:
        return f"{self.instances}x{self.threads}"

    @classmethod
    def parse(cls, text: str) -> Layout:
        match = LAYOUT_RE.match(text)
        if not match:
            raise ValueError(f"not a layout: {text!r} (expected NxT, e.g. 2x1)")
        return cls(int(match.group(1)), int(match.group(2)))


def requested_layouts(policy: CapacityPolicy, usable_cores: int) -> list[Layout]:
    """The suite's layouts; `auto` is every N x T that fills the usable cores."""
    layouts: list[Layout] = []
    for item in policy.layouts:
        if item == "auto":
            layouts += [Layout(usable_cores // t, t) for t in range(1, usable_cores + 1) if usable_cores % t == 0]
        else:
            layouts.append(Layout.parse(item))
    return list(dict.fromkeys(layouts))


def sweep_counts(instances: int, sweep: bool) -> list[int]:
    """Instance counts measured for a width: 1 (the SingleStream floor), powers of 2 with `sweep`, and N."""
    counts = {1, instances}
    if sweep:
        counts.update(2**i for i in range(1, instances.bit_length()) if 2**i < instances)
    return sorted(counts)


class InstanceGroup:
    """N instances of one width, started together; the parent writes requests into their shared pipe."""

    def __init__(
        self,
        scenario: Scenario,
        artifact_path: Path,
        cores: list[list[int]],
        log_dir: Path,
        batch_sizes: list[int],
        policy: CapacityPolicy | None = None,
        workers: ZygoteWorkers | None = None,
    ):
        """`batch_sizes`: the closed loops' (the scenario's own comes on top); `policy`: what server
        mode needs inputs for (batches of up to batching.max_batch requests, request_mix's seq_lens);
        `workers`: the zygote to fork the instances from (None: fresh interpreters)."""
        self.scenario = scenario
        self.artifact_path = artifact_path
        self.cores = cores
        self.log_dir = log_dir
        self.batch_sizes = batch_sizes
        batching = policy.batching if policy else None
        self.serve_batch_sizes = [
            m * scenario.batch_size for m in range(1, (batching.max_batch if batching else 1) + 1)
        ]
        self.mix_seq_lens = list(policy.seq_len_mix.choices) if policy and policy.seq_len_mix else []
        self.generation = None  # LLM server mode's request shapes: a generate: scenario's
        if scenario.generate is not None and policy is not None:
            mix = policy.request_mix if isinstance(policy.request_mix, GenerationMix) else None
            self.generation = GenerationSetup(
                list(mix.prompt_tokens) if mix else [scenario.seq_len or 0],
                list(mix.new_tokens) if mix else [scenario.generate.new_tokens],
                batching.max_batch if batching else 1,
            )
        self.workers = workers
        self.instances: list[InstanceProcess] = []
        self.request_fd = -1

    def __enter__(self) -> InstanceGroup:
        read_fd, self.request_fd = os.pipe()
        try:
            with contextlib.suppress(OSError):  # a smaller pipe only makes the generator block sooner
                fcntl.fcntl(self.request_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            env = child_env(self.scenario.threads, {})
            for index, cores in enumerate(self.cores):
                spec = InstanceSpec(
                    self.scenario.to_dict(),
                    str(self.artifact_path),
                    self.batch_sizes,
                    self.serve_batch_sizes,
                    self.mix_seq_lens,
                    index,
                    cores,
                    self.generation,
                )
                self.instances.append(InstanceProcess.start(spec, env, self.log_dir, self.workers))
            for instance in self.instances:
                instance.connect(read_fd, self.scenario.timeout_s)
                instance.ready = instance.receive(Ready, self.scenario.timeout_s)
        except BaseException as exc:
            self.__exit__(type(exc))
            raise
        finally:
            os.close(read_fd)
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None, *exc: object) -> None:
        for instance in self.instances:
            instance.close(graceful=exc_type is None)  # after an error (Ctrl-C) an instance may be busy: kill it
        if self.request_fd >= 0:
            os.close(self.request_fd)
            self.request_fd = -1

    def timeout_s(self, planned_s: float) -> float:
        return planned_s + self.scenario.timeout_s


def closed_loop(group: InstanceGroup, k: int, batch_size: int, duration_s: float) -> tuple[ClosedLoopFigures, dict]:
    """The first k instances call back to back on `batch_size` samples, all started at once."""
    active = group.instances[:k]
    start_at = time.monotonic() + START_DELAY_S
    for instance in active:
        instance.send(ClosedLoop(start_at, duration_s, batch_size))
    replies = [instance.receive(ClosedLoopDone, group.timeout_s(START_DELAY_S + duration_s)) for instance in active]
    runs, pooled, raw = [], [], {}
    for instance, reply in zip(active, replies, strict=True):
        times = np.frombuffer(base64.b64decode(reply.times_b64), dtype="<f8")
        raw[f"i{instance.index}"] = times
        pooled.extend(times.tolist())
        runs.append(
            InstanceRun(
                instance=instance.index,
                cores=instance.cores,
                calls=reply.calls,
                samples_per_s=reply.calls * batch_size / reply.wall_s,
                latency_s=LatencyStats.from_times(times.tolist()),
                cpu_s=reply.cpu_s,
            )
        )
    figures = ClosedLoopFigures(
        batch_size=batch_size,
        duration_s=duration_s,
        samples_per_s=sum(r.samples_per_s for r in runs),
        requests_per_s=sum(r.samples_per_s for r in runs) / batch_size,
        latency_s=LatencyStats.from_times(pooled),
        instances=runs,
    )
    return figures, raw


def server_step(
    group: InstanceGroup,
    k: int,
    rate_per_s: float,
    seed: int,
    limits: StepLimits,
    slo_p99_s: float,
    batching: BatchingPolicy | None = None,
    mix: SeqLenMix | None = None,
) -> tuple[ServerStep, dict]:
    """One open-loop step at `rate_per_s` against the first k instances, until its verdict is decided."""
    offsets = poisson_schedule(rate_per_s, limits, seed)
    n = len(offsets)
    batches = Batching(batching.max_batch, batching.max_delay_ms / 1e3) if batching is not None else None

    def running(scheduled: np.ndarray, slots: np.ndarray, sent: int, now: float) -> str:
        ended = slots[step_region("ended", n)]
        return running_verdict(scheduled, ended, sent, now, slo_p99_s, limits.confidence)

    run = open_loop(
        group,
        k,
        offsets,
        limits,
        lambda path: Serve(n, mix is not None, path, batches),
        request_choices(mix.weights, n, seed) if mix is not None else None,
        running,
        ServeDone,
        max(_DRAIN_MIN_S, 2 * slo_p99_s),
    )
    scheduled, ended = run.fields["scheduled"], run.fields["ended"]
    times = StepTimes(
        scheduled=scheduled.tolist(),
        sent=run.sent.tolist(),
        started=run.fields["started"].tolist(),
        ended=ended.tolist(),
        step_start=run.step_start,
        drain_end=run.drain_end,
    )
    step = evaluate_step(
        rate_per_s,
        times,
        limits,
        slo_p99_s,
        loadgen_cpu_s=run.loadgen_cpu_s,
        wall_s=run.wall_s,
        instances_cpu_s=sum(r.cpu_s for r in run.replies),
        seed=seed,
    )
    batch, seq = run.fields["batch"], run.fields["seq"]
    step = dataclasses.replace(
        step,
        loadgen_cores=run.generator_cores,
        batch_size_counts=batch_size_counts(batch) if batching else None,
        **(_by_seq_len(mix, seq, scheduled, ended, run.drain_end) if mix else {}),
    )
    return step, run.raw(("batch", "seq"))


@dataclass(frozen=True)
class OpenLoopRun:
    """What one open-loop step sent and what the instances wrote back (server_step's, LLM server mode's)."""

    fields: dict[str, np.ndarray]  # each of instance.STEP_FIELDS, for the requests sent (the first m), copied
    sent: np.ndarray  # each of those requests' send time
    step_start: float  # the schedule's origin (time.monotonic)
    drain_end: float  # when the generator stopped waiting for unfinished requests
    loadgen_cpu_s: float
    wall_s: float
    generator_cores: list[int] | None
    replies: list[Any]  # each active instance's reply to the step's command

    def raw(self, extra: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The step's raw arrays for the .npz (times from the step's start; NaN: never started / ended)."""
        start = self.step_start

        def since(times: np.ndarray) -> np.ndarray:
            return np.where(times > 0, times - start, np.nan)

        fixed = {
            "scheduled": self.fields["scheduled"] - start,
            "sent": self.sent - start,
            "started": since(self.fields["started"]),
            "ended": since(self.fields["ended"]),
            "instance": self.fields["instance"],
        }
        return {**fixed, **{name: since(self.fields[name]) if name == "first" else self.fields[name] for name in extra}}


def open_loop(
    group: InstanceGroup,
    k: int,
    offsets: list[float],
    limits: StepLimits,
    command: Callable[[str], Serve | ServeGenerate],
    seq: np.ndarray | None,
    running: Callable[[np.ndarray, np.ndarray, int, float], str],
    reply: type[Any],
    drain_s: float,
) -> OpenLoopRun:
    """Send the Poisson arrivals `offsets` to the first k instances, given `command(step file)`, until the
    running verdict (`running(scheduled, step file, sent, now)`) is decided; drain, stop, collect `reply`s.

    `seq`: each request's index into a mix (the step file's `seq`), written before the first request.
    """
    n = len(offsets)
    active = group.instances[:k]
    with step_file(n) as (path, slots):
        for instance in active:
            instance.send(command(path))
        for instance in active:
            instance.receive(Serving, group.timeout_s(0))  # blocked on the request pipe
        usable = sorted(os.sched_getaffinity(0))
        generator_cores = _pin_generator(active, usable)
        wall_started, cpu_started = time.monotonic(), time.thread_time()
        step_start = wall_started + START_DELAY_S
        scheduled = np.asarray(offsets) + step_start
        slots[step_region("scheduled", n)] = scheduled  # a batching instance times its wait from these
        if seq is not None:
            slots[step_region("seq", n)] = seq
        ended = slots[step_region("ended", n)]

        def decided(sent: int) -> bool:
            # The step's length is its last sent arrival's offset (loadgen.evaluate_step), so that, not
            # the clock, must reach min_duration_s: stopping by the clock made steps that ended a few
            # ms short of it "too short", and so invalid, confirming steps included.
            if sent < max(1, limits.min_requests) or scheduled[sent - 1] - step_start < limits.min_duration_s:
                return False
            return running(scheduled, slots, sent, time.monotonic()) != UNDECIDED

        try:
            with precise_sleep():
                sent = send_schedule(group.request_fd, scheduled.tolist(), stop=decided)
                m = int(np.count_nonzero(np.frombuffer(sent, dtype="<f8")))  # sent in order: the first m
                drain_end = _drain(ended[:m], (scheduled[m - 1] if m else step_start) + drain_s)
            if np.count_nonzero(ended[:m]) < m:
                slots[0] = 1.0  # cancel: the instances drop the backlog unserved
            os.write(group.request_fd, b"".join(STOP.to_bytes(8, "little") for _ in active))
        except BrokenPipeError:
            raise InstanceError("every instance had closed the request pipe (they died)") from None
        finally:
            if generator_cores is not None:
                os.sched_setaffinity(0, usable)
        loadgen_cpu_s = time.thread_time() - cpu_started
        replies = [
            instance.receive(reply, group.timeout_s(drain_s + (offsets[m - 1] if m else 0))) for instance in active
        ]
        wall_s = time.monotonic() - wall_started
        fields = {name: slots[step_region(name, n)][:m].copy() for name in STEP_FIELDS}
    return OpenLoopRun(
        fields=fields,
        sent=np.frombuffer(sent, dtype="<f8")[:m].copy(),
        step_start=step_start,
        drain_end=drain_end,
        loadgen_cpu_s=loadgen_cpu_s,
        wall_s=wall_s,
        generator_cores=generator_cores,
        replies=replies,
    )


def request_choices(weights: Sequence[float], requests: int, seed: int) -> np.ndarray:
    """Each request's index into a mix (a SeqLenMix's choices, LLM server mode's request shapes), drawn with
    the mix's relative weights (seeded like the step's arrivals)."""
    p = np.asarray(weights) / sum(weights)
    return np.random.default_rng([seed, 1]).choice(len(weights), size=requests, p=p).astype(float)


def _by_seq_len(mix: SeqLenMix, seq: np.ndarray, scheduled: np.ndarray, ended: np.ndarray, drain_end: float) -> dict:
    """Per seq_len of the mix: requests sent and their p99 latency; an unfinished request counts as
    ending at the drain's end (as in the step's own p99, a lower bound then)."""
    latencies = np.where(ended > 0, ended, drain_end) - scheduled
    counts, p99s = [], []
    for index in range(len(mix.choices)):
        mine = sorted(latencies[seq == index].tolist())
        counts.append(len(mine))
        p99s.append(nearest_rank(mine, 99) if mine else None)
    return {"mix_requests": counts, "mix_latency_p99_s": p99s}


def batch_size_counts(batch: np.ndarray) -> list[int]:
    """Batches of 1, 2, ... requests from each served request's batch size (0: not served)."""
    sizes = batch[batch > 0].astype(int)
    if not len(sizes):
        return []
    requests = np.bincount(sizes)[1:]  # requests that ran in a batch of i + 1
    return [int(count) // size for size, count in enumerate(requests, start=1)]


def _pin_generator(active: list[InstanceProcess], usable: list[int]) -> list[int] | None:
    """Pin this thread (the generator) to the usable cores no active instance has; None when there are none."""
    busy = {core for instance in active for core in instance.cores}
    spare = sorted(set(usable) - busy)
    if not spare:
        return None  # every core serves: the generator competes with the instances, and its cost is measured
    os.sched_setaffinity(0, spare)  # pid 0: the calling thread only
    return spare


def _drain(ended: np.ndarray, deadline: float) -> float:
    """Wait, sleeping, until every request has ended or the deadline has passed; returns when it stopped."""
    while np.count_nonzero(ended) < len(ended):
        now = time.monotonic()
        if now >= deadline:
            return now
        time.sleep(min(0.01, deadline - now))
    return time.monotonic()


@contextlib.contextmanager
def step_file(requests: int) -> Iterator[tuple[str, np.ndarray]]:
    """A zeroed float64 file in shared memory that the instances map: per-request start, end, instance.

    The mapping is released when the last array viewing it is garbage (closing it under a live
    view would fail); the file itself is removed on the way out.
    """
    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix="bench-step-", dir=folder)
    try:
        size = 8 * step_file_slots(requests)
        os.ftruncate(fd, size)
        yield path, np.frombuffer(mmap.mmap(fd, size), dtype="<f8")
    finally:
        os.close(fd)
        os.unlink(path)


def instance_memory(group: InstanceGroup, k: int) -> list[InstanceMemory]:
    out = []
    for instance in group.instances[:k]:
        try:
            full = psutil.Process(instance.child.pid).memory_full_info()
            rss, uss, pss = full.rss, full.uss, getattr(full, "pss", None)
        except (psutil.Error, OSError):
            rss = uss = pss = None
        peak = read_status_bytes(instance.child.pid).get("VmHWM")
        out.append(InstanceMemory(instance.index, rss, uss, pss, peak))
    return out


def search_bounds(
    policy: CapacityPolicy, threads: int, closed_rate_per_s: float, floor_p99_s: float
) -> dict[str, float | str] | str:
    """Where the rate search starts and how low it may go, or why there is no search (a stop reason).

    No search when the SLO is below the single-stream p99, or when the instances serve fewer
    requests per second, back to back, than a passing step needs within step_max_duration_s:
    at least verdict.fewest_to_pass requests, all within the SLO (with a margin: Poisson counts vary).
    """
    fewest = max(fewest_to_pass(policy.confidence), policy.step_min_requests)
    passable = PASSABLE_MARGIN * fewest / policy.step_max_duration_s
    if floor_p99_s > policy.slo_p99_ms / 1e3:
        return (
            f"not searched: the SLO ({policy.slo_p99_ms:g} ms) is below the single-stream p99 latency "
            f"at {threads} thread(s) per instance ({floor_p99_s * 1e3:.3g} ms); no rate can meet it"
        )
    if closed_rate_per_s < passable:
        return (
            f"not searched: too slow to plan within step_max_duration_s ({policy.step_max_duration_s:g} s): "
            f"a step passes p99 <= {policy.slo_p99_ms:g} ms at {policy.confidence:.0%} confidence with at least "
            f"{fewest} requests, which at the {closed_rate_per_s:.3g} requests/s these instances serve "
            f"back to back takes {fewest / closed_rate_per_s:.0f} s; raise step_max_duration_s to at least "
            f"{PASSABLE_MARGIN * fewest / closed_rate_per_s:.0f} s"
        )
    lowest = closed_rate_per_s / 2 / MIN_RATE_DIVISOR
    why = (
        f"the lowest rate at which a step can hold the {fewest} requests a pass needs within "
        f"step_max_duration_s ({policy.step_max_duration_s:g} s); raise step_max_duration_s to try lower rates"
    )
    return {
        "start_rate_per_s": max(closed_rate_per_s / 2, passable),
        "min_rate_per_s": max(lowest, passable),
        "min_rate_why": why if passable > lowest else "the lowest rate tried",
    }


def measure_point(
    group: InstanceGroup,
    k: int,
    policy: CapacityPolicy,
    floor_p99_s: float | None,
    requested: bool,
    phase: Phase,
    raw_path: Path,
    log: Phase = lambda _: None,
    serve: ServeMode | None = None,
) -> LayoutFigures:
    """Every mode with the first k instances of a group: closed loop, memory, server, offline (with `serve`:
    closed loop, `serve`, memory)."""
    threads = group.scenario.threads
    layout = Layout(k, threads).name
    raw: dict[str, np.ndarray] = {}
    phase(f"capacity {layout}: closed loop")
    closed, closed_raw = closed_loop(group, k, group.scenario.batch_size, policy.duration_s)
    raw.update({f"closed_loop_{key}": v for key, v in closed_raw.items()})
    if serve is not None:
        served = serve(group, k, phase, log, raw)
        memory = instance_memory(group, k)
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(raw_path, **raw)
        return LayoutFigures(
            layout=layout,
            instances=k,
            threads_per_instance=threads,
            requested=requested,
            status="ok",
            cores=[instance.cores for instance in group.instances[:k]],
            closed_loop=closed,
            memory=memory,
            **served,
        )

    floor_p99_s = floor_p99_s if floor_p99_s is not None else closed.latency_s.p99  # k = 1: its own
    median_s = closed.latency_s.median if closed.latency_s else None
    server = search_server(group, k, policy, closed.requests_per_s, floor_p99_s, phase, log, raw, service_s=median_s)
    batched = None
    if policy.batching is not None:
        # The search starts at half the rate it is given: batching starts at the unbatched answer.
        served_per_s = max(closed.requests_per_s, 2 * (server.max_rate_per_s or 0.0))
        batched = search_server(group, k, policy, served_per_s, floor_p99_s, phase, log, raw, policy.batching)
    memory = instance_memory(group, k)  # after serving; before offline's big batches (VmHWM keeps those)

    phase(f"capacity {layout}: offline (batch {policy.offline_batch_size})")
    offline, offline_raw = closed_loop(group, k, policy.offline_batch_size, policy.duration_s)
    raw.update({f"offline_{key}": v for key, v in offline_raw.items()})
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(raw_path, **raw)
    return LayoutFigures(
        layout=layout,
        instances=k,
        threads_per_instance=threads,
        requested=requested,
        status="ok",
        cores=[instance.cores for instance in group.instances[:k]],
        closed_loop=closed,
        offline=offline,
        server=server,
        memory=memory,
        batched_server=batched,
    )


def confirming_limits(policy: CapacityPolicy, limits: StepLimits, passing: ServerStep) -> StepLimits:
    """A confirming step's limits: longer than the step that passed, CONFIRM_FACTOR x its length, at least
    CONFIRM_MIN_S (both capped at step_max_duration_s)."""
    longer = max(CONFIRM_MIN_S, CONFIRM_FACTOR * max(policy.step_min_duration_s, passing.duration_s))
    return dataclasses.replace(limits, min_duration_s=min(policy.step_max_duration_s, longer))


def search_server(
    group: InstanceGroup,
    k: int,
    policy: CapacityPolicy,
    closed_rate_per_s: float,
    floor_p99_s: float,
    phase: Phase,
    log: Phase,
    raw: dict[str, np.ndarray],
    batching: BatchingPolicy | None = None,
    service_s: float | None = None,
) -> ServerFigures:
    """Server mode with the first k instances: the search for the highest rate that meets the SLO,
    its confirmation, the host's stall floor where the answer calls for it (unbatched, given the closed
    loop's median call `service_s`; bench.capacity.stalls), then a low-load step. Raw times go into `raw`."""
    layout = Layout(k, group.scenario.threads).name + (f" {batching.label}" if batching else "")
    prefix = "batched_server" if batching else "server"
    assert policy.slo_p99_ms is not None  # CapacityPolicy.check: a forward-call scenario has one
    slo_s = policy.slo_p99_ms / 1e3
    limits = StepLimits(
        policy.step_min_duration_s, policy.step_min_requests, policy.step_max_duration_s, policy.confidence
    )

    def run_step(rate: float, index: int, step_limits: StepLimits = limits, kind: str = "step") -> ServerStep:
        phase(f"capacity {layout}: server {kind} {index + 1} at {rate:,.4g} requests/s")
        seed = next_seed(group.scenario.seed, index)  # batched or not, step i gets the same arrivals
        step, step_raw = server_step(group, k, rate, seed, step_limits, slo_s, batching, policy.seq_len_mix)
        step = dataclasses.replace(step, confirmation=kind == "confirming step")
        raw.update({f"{prefix}_step{index}_{key}": v for key, v in step_raw.items()})
        log(f"capacity {layout}: {progress_line(step, kind)}")
        return step

    def confirm(rate: float, index: int, passing: ServerStep) -> ServerStep:
        return run_step(rate, index, confirming_limits(policy, limits, passing), "confirming step")

    confirmed = False
    bounds = search_bounds(policy, group.scenario.threads, closed_rate_per_s, floor_p99_s)
    if isinstance(bounds, str):
        search_steps, max_rate, stop = [], None, bounds
    else:
        search = search_max_rate(
            run_step, tolerance=policy.tolerance, max_steps=policy.max_steps, confirm=confirm, **bounds
        )
        search_steps, max_rate, stop = search.steps, search.max_rate_per_s, search.stop_reason
        confirmed = search.confirmed
    stalls = None
    if batching is None and service_s and not isinstance(bounds, str) and needs_floor(max_rate, k, service_s, slo_s):
        chosen = floor_rate(closed_rate_per_s, k, service_s, slo_s)
        if chosen is None:
            stop += (
                f"; no stall floor step: the SLO is too close to the {service_s * 1e3:.3g} ms call for any low load "
                "to keep queueing out of the tail"
            )
        else:
            rate, utilisation, queueing_share = chosen
            floor_limits = dataclasses.replace(limits, min_requests=max(FLOOR_REQUESTS, limits.min_requests))
            step = run_step(rate, len(search_steps) + 1, floor_limits, "stall floor step")
            stalls = stall_floor(step, slo_s, utilisation, queueing_share)
            if stalls.note:
                stop += f"; {stalls.note}"
    low_load = None
    if max_rate is not None:
        # A tenth of the capacity, at least LOW_LOAD_REQUESTS within LOW_LOAD_MAX_S (a p99 of fewer
        # means little); not at all when that is close to the capacity: it would no longer be a low load.
        rate = max(max_rate * LOW_LOAD_FRACTION, LOW_LOAD_REQUESTS / LOW_LOAD_MAX_S)
        if rate <= max_rate * LOW_LOAD_CEILING:
            max_s = max(policy.step_min_duration_s, min(policy.step_max_duration_s, LOW_LOAD_MAX_S))
            short = dataclasses.replace(limits, max_duration_s=max_s)
            low_load = run_step(rate, len(search_steps), short, "low-load step")
        else:
            stop += (
                f"; no low-load step: {LOW_LOAD_REQUESTS} requests within {LOW_LOAD_MAX_S:g} s "
                f"({rate:.4g}/s) is over {LOW_LOAD_CEILING:.0%} of the confirmed rate"
            )
    return ServerFigures(
        slo_p99_s=slo_s,
        max_rate_per_s=max_rate,
        stop_reason=stop,
        min_duration_s=policy.step_min_duration_s,
        min_requests=policy.step_min_requests,
        steps=search_steps,
        low_load_step=low_load,
        verdict_rule=RULE.format(confidence=policy.confidence),
        confirmed=confirmed,
        batching_max_batch=batching.max_batch if batching else None,
        batching_max_delay_s=batching.max_delay_ms / 1e3 if batching else None,
        mix_seq_lens=list(policy.seq_len_mix.choices) if policy.seq_len_mix else None,
        mix_weights=list(policy.seq_len_mix.weights) if policy.seq_len_mix else None,
        stall_floor=stalls,
    )


def measure_capacity(
    scenario: Scenario,
    artifact_path: Path,
    out_dir: Path,
    phase: Phase,
    log: Phase = lambda _: None,
    *,
    workers: ZygoteWorkers | None = None,
    serve: ServeMode | None = None,
) -> CapacityFigures:
    """Measure every layout of the scenario's capacity policy; failures become notes, never exceptions.

    `phase` says what runs now; `log` gets one line per finished server step (the progress to keep);
    the instances fork from `workers`' zygote when there is one; `serve` replaces server and offline modes
    (bench.capacity.llm's LLM server mode).
    """
    policy = scenario.capacity
    assert policy is not None
    started = time.monotonic()
    usable = sorted(os.sched_getaffinity(0))
    layouts = requested_layouts(policy, len(usable))
    results: dict[Layout, LayoutFigures] = {}
    for layout in layouts:
        if layout.instances * layout.threads > len(usable):
            results[layout] = LayoutFigures(
                layout=layout.name,
                instances=layout.instances,
                threads_per_instance=layout.threads,
                requested=True,
                status="skipped",
                note=f"needs {layout.instances * layout.threads} cores; this process may use {len(usable)}",
            )
    widths = []  # (threads, instance counts to measure, the requested ones)
    for threads in dict.fromkeys(layout.threads for layout in layouts):
        fitting = [la for la in layouts if la.threads == threads and la not in results]
        if fitting:
            largest = max(la.instances for la in fitting)
            counts = sorted(set(sweep_counts(largest, policy.sweep)) | {la.instances for la in fitting})
            widths.append((threads, counts, {la.instances for la in fitting}))
    points = PointProgress(sum(len(counts) for _, counts, _ in widths), log)
    for threads, counts, requested in widths:
        cores = [usable[i * threads : (i + 1) * threads] for i in range(max(counts))]
        results.update(
            _measure_width(
                scenario, artifact_path, out_dir, policy, cores, counts, requested, phase, points, workers, serve
            )
        )
    ordered = [results[la] for la in layouts] + [f for la, f in results.items() if la not in layouts]
    best = _best_layout(ordered)
    ok = any(f.status == "ok" and f.requested for f in ordered)
    notes = [f"{f.layout}: {f.note}" for f in ordered if f.status != "ok" and f.note]
    return CapacityFigures(
        status="ok" if ok else "failed",
        note="; ".join(notes) or None,
        slo_p99_s=_slo_s(policy),
        usable_cores=len(usable),
        best_layout=best,
        layouts=ordered,
        percentile_rule=PERCENTILE_RULE.replace("round times", "call or request times"),
        duration_s=time.monotonic() - started,
        memory_total_bytes=psutil.virtual_memory().total,
    )


class PointProgress:
    """The layout points (instance counts) of one capacity measurement, for its step lines: each says
    which point it belongs to, and once a point has finished, about how long the rest will take (the
    mean time of the points so far: a point's steps are not known before its search ends)."""

    def __init__(self, total: int, log: Phase, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.log, self.clock = total, log, clock
        self.done_s: list[float] = []
        self.started_s = clock()

    def start(self) -> None:
        self.started_s = self.clock()

    def finish(self) -> None:
        self.done_s.append(self.clock() - self.started_s)

    def step(self, line: str) -> None:
        """`log` this finished step's line, with where the measurement stands."""
        text = f"{line}  [layout point {len(self.done_s) + 1} of {self.total}"
        if self.done_s:
            this_point_s = self.clock() - self.started_s
            left_s = statistics.fmean(self.done_s) * (self.total - len(self.done_s)) - this_point_s
            text += f", about {duration_readable(max(0.0, left_s))} left"
        self.log(text + "]")


def not_measured(scenario: Scenario, note: str) -> CapacityFigures:
    assert scenario.capacity is not None
    return CapacityFigures(
        status="failed",
        note=note,
        slo_p99_s=_slo_s(scenario.capacity),
        usable_cores=cpu_count(),
        best_layout=None,
    )


def _slo_s(policy: CapacityPolicy) -> float | None:
    return policy.slo_p99_ms / 1e3 if policy.slo_p99_ms is not None else None


def _measure_width(
    scenario: Scenario,
    artifact_path: Path,
    out_dir: Path,
    policy: CapacityPolicy,
    cores: list[list[int]],
    counts: list[int],
    requested: set[int],
    phase: Phase,
    points: PointProgress,
    workers: ZygoteWorkers | None,
    serve: ServeMode | None = None,
) -> dict[Layout, LayoutFigures]:
    """One group of instances (one per entry of `cores`), measured with the first k for each k in `counts`."""
    threads = len(cores[0])
    results: dict[Layout, LayoutFigures] = {}
    instance_scenario = dataclasses.replace(scenario, threads=threads)
    phase(f"capacity: starting {len(cores)} instance(s) of {threads} thread(s)")
    floor_p99_s = None
    log_dir = out_dir / f"t{threads}"
    try:
        group = InstanceGroup(
            instance_scenario, artifact_path, cores, log_dir, [policy.offline_batch_size], policy, workers
        )
        with group:
            for k in counts:
                layout = Layout(k, threads)
                raw_path = out_dir / f"{layout.name}.npz"
                points.start()
                figures = measure_point(
                    group, k, policy, floor_p99_s, k in requested, phase, raw_path, points.step, serve
                )
                points.finish()
                if k == 1:
                    floor_p99_s = figures.closed_loop.latency_s.p99 if figures.closed_loop else None
                results[layout] = figures
    except InstanceError as exc:
        for k in counts:
            layout = Layout(k, threads)
            if layout not in results:
                results[layout] = LayoutFigures(
                    layout=layout.name,
                    instances=k,
                    threads_per_instance=threads,
                    requested=k in requested,
                    status="failed",
                    note=str(exc),
                )
    return results


def _best_layout(layouts: list[LayoutFigures]) -> str | None:
    """The requested layout with the highest rate at the SLO (ties: more offline throughput)."""
    candidates = [f for f in layouts if f.requested and f.status == "ok" and _max_rate(f) is not None]
    if not candidates:
        return None

    def key(f: LayoutFigures) -> tuple[float, float]:
        return (_max_rate(f) or 0.0, f.offline.samples_per_s if f.offline else 0.0)

    return max(candidates, key=key).layout


def _max_rate(f: LayoutFigures) -> float | None:
    """The layout's confirmed rate: its server mode's, or its LLM server mode's."""
    searched = f.generation_server or f.server
    return searched.max_rate_per_s if searched else None


def summary(figures: CapacityFigures) -> str:
    """One line for the console: each requested layout's rate at the SLO, and the best."""
    if figures.status != "ok":
        return f"capacity: {figures.status}: {(figures.note or '').splitlines()[0] if figures.note else ''}"
    parts = []
    for f in figures.layouts:
        if not f.requested:
            continue
        if f.status != "ok" or (f.server or f.generation_server) is None:
            parts.append(f"{f.layout} {f.status}")
        elif _max_rate(f) is None:
            parts.append(f"{f.layout} no confirmed rate")  # unreachable, or no pass held on confirmation
        else:
            parts.append(
                f"{f.layout} {_max_rate(f):,.3g}/s" if f.generation_server else f"{f.layout} {_max_rate(f):,.0f}/s"
            )
        floor = f.server.stall_floor if f.status == "ok" and f.server else None
        if floor is not None and floor.limits_rate:  # the rate (or none) is the host's, not the model's
            parts[-1] += f": {headline(floor)}"
        if f.status == "ok" and f.batched_server is not None:
            rate = f.batched_server.max_rate_per_s
            parts[-1] += f" ({'no confirmed rate' if rate is None else f'{rate:,.0f}/s'} batched)"
    best = f"; best {figures.best_layout}" if figures.best_layout else ""
    llm = next((f.generation_server for f in figures.layouts if f.generation_server), None)
    if llm is not None:
        slos = f"p99 TTFT <= {llm.slo_ttft_s * 1e3:g} ms and p99 TPOT <= {llm.slo_tpot_s * 1e3:g} ms"
    else:  # an ok forward-call measurement has its SLO
        slos = f"p99 <= {(figures.slo_p99_s or math.nan) * 1e3:g} ms"
    return f"capacity at {slos}: " + ", ".join(parts) + best
