"""Contention: how much CPU other processes and the hypervisor took while a steady state was timed.

On a shared host a row can be several times slower than on a quiet one and still look like
a plain `ok`. The worker reads, at the start and the end of its timed steady state:

- /proc/stat, the lines of the cores it may run on (its affinity): their busy time (user,
  nice, system, irq, softirq) and their steal time (taken by the hypervisor);
- its own CPU time and that of the parent (bench's RSS sampler and poll loop).

`others_cpu_s` is the cores' busy time minus the worker's and the parent's: what other
processes ran there. The verdict (thresholds below, in the README too):

- `contended` when other processes used more than the cores the scenario leaves free
  (cores - threads) plus OTHERS_MARGIN_PER_THREAD of a core per scenario thread, on average
  over the window; or when steal took more than STEAL_PER_THREAD of a core per thread;
- `quiet` otherwise.

The kernel counts in clock ticks (10 ms), so a window under ~0.5 s is coarse; the record
keeps every figure so a reader can judge. `cpu_utilization_per_thread` (the worker's CPU time
over wall time, per thread) is reported alongside but is no part of the verdict: a small
model may not keep all its threads busy on a quiet host either.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

ON_CONTENTION = ("mark", "retry", "wait")  # `bench run --on-contention` (bench.measure.runner.ContentionPolicy)
OTHERS_MARGIN_PER_THREAD = 0.1  # cores other processes may use beyond the free ones, per scenario thread
STEAL_PER_THREAD = 0.05  # cores the hypervisor may steal, per scenario thread
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system irq softirq (guest time is inside user)
_STEAL_FIELD = 7


@dataclass(frozen=True)
class CpuTimes:
    busy_s: float
    steal_s: float


def read_cpu_times(cores: set[int]) -> CpuTimes | None:
    """Busy and steal time of `cores` since boot, from /proc/stat; None where there is none."""
    busy = steal = 0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
                    continue
                values = [int(v) for v in rest.split()]
                busy += sum(values[i] for i in _BUSY_FIELDS)
                steal += values[_STEAL_FIELD] if len(values) > _STEAL_FIELD else 0
    except (OSError, ValueError):
        return None
    return CpuTimes(busy * _TICK_S, steal * _TICK_S)


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime (fields 14 and 15)
    except (OSError, ValueError, IndexError):
        return None


def verdict(cores: int, threads: int, wall_s: float, others_cpu_s: float, steal_s: float) -> tuple[str, str]:
    """`quiet` or `contended`, and why, in words."""
    others, stolen = others_cpu_s / wall_s, steal_s / wall_s
    free = max(cores - threads, 0)
    allowed = free + OTHERS_MARGIN_PER_THREAD * threads
    reasons = []
    if others > allowed:
        reasons.append(
            f"other processes used {others:.2f} cores on average, more than the {free} core(s) this scenario "
            f"leaves free (+{OTHERS_MARGIN_PER_THREAD * threads:.2f})"
        )
    if stolen > STEAL_PER_THREAD * threads:
        reasons.append(f"the hypervisor stole {stolen:.2f} cores")
    if reasons:
        return "contended", "; ".join(reasons)
    return "quiet", (
        f"other processes used {others:.2f} cores (allowed {allowed:.2f}), steal {stolen:.2f} "
        f"(allowed {STEAL_PER_THREAD * threads:.2f})"
    )


class Probe:
    """Readings at the start of a timed window; `finish` at its end gives the record's `contention`."""

    def __init__(self, parent_pid: int | None):
        self.parent_pid = parent_pid
        self.cores = os.sched_getaffinity(0)
        self.started_s = time.perf_counter()
        self.worker_started_s = time.process_time()
        self.cpu = read_cpu_times(self.cores)
        self.parent_cpu_s = process_cpu_s(parent_pid) if parent_pid else None

    def finish(self, threads: int) -> dict[str, Any] | None:
        wall_s = time.perf_counter() - self.started_s
        worker_cpu_s = time.process_time() - self.worker_started_s
        cpu = read_cpu_times(self.cores)
        parent_end_s = process_cpu_s(self.parent_pid) if self.parent_pid else None
        if self.cpu is None or cpu is None or wall_s <= 0:
            return None  # no /proc/stat (not Linux): no figures rather than made-up ones
        parent_cpu_s = parent_end_s - self.parent_cpu_s if None not in (parent_end_s, self.parent_cpu_s) else 0.0
        busy_s, steal_s = cpu.busy_s - self.cpu.busy_s, cpu.steal_s - self.cpu.steal_s
        others_cpu_s = max(busy_s - worker_cpu_s - parent_cpu_s, 0.0)
        state, why = verdict(len(self.cores), threads, wall_s, others_cpu_s, steal_s)
        return asdict(
            Contention(
                verdict=state,
                why=why,
                cores=len(self.cores),
                threads=threads,
                wall_s=wall_s,
                others_cpu_s=others_cpu_s,
                steal_s=steal_s,
                worker_cpu_s=worker_cpu_s,
                parent_cpu_s=parent_cpu_s,
                cpu_utilization_per_thread=worker_cpu_s / wall_s / threads,
            )
        )


def wait_for_quiet(threads: int, limit_s: float, *, window_s: float = 1.0, announce: Any = None) -> tuple[bool, float]:
    """Before a scenario (`--on-contention wait`): wait until one `window_s` window of the host is quiet
    for `threads` by the verdict's rule (this process's own CPU time left out). Returns whether it was,
    and the seconds waited; gives up after `limit_s`."""
    cores = os.sched_getaffinity(0)
    started = time.monotonic()
    while True:
        before, own_before, wall_before = read_cpu_times(cores), time.process_time(), time.perf_counter()
        time.sleep(window_s)
        after, own_s, wall_s = (
            read_cpu_times(cores),
            time.process_time() - own_before,
            time.perf_counter() - wall_before,
        )
        if before is None or after is None:
            return True, time.monotonic() - started  # cannot tell: do not wait forever for nothing
        others_s = max(after.busy_s - before.busy_s - own_s, 0.0)
        state, why = verdict(len(cores), threads, wall_s, others_s, after.steal_s - before.steal_s)
        waited_s = time.monotonic() - started
        if state == "quiet":
            return True, waited_s
        if waited_s >= limit_s:
            return False, waited_s
        if announce is not None:
            announce(f"waiting for a quiet host ({why})", waited_s)


@dataclass(frozen=True)
class Contention:
    """The `contention` of a row: who else used the scenario's cores while its steady state was timed."""

    verdict: str  # "quiet" or "contended" (bench.checks.contention's thresholds)
    why: str
    cores: int  # cores the worker could run on (its affinity)
    threads: int
    wall_s: float  # the timed steady state
    others_cpu_s: float  # busy time of those cores minus the worker's and bench's parent's
    steal_s: float  # taken by the hypervisor from those cores
    worker_cpu_s: float
    parent_cpu_s: float  # bench's parent: the RSS sampler and the poll loop
    cpu_utilization_per_thread: float  # worker CPU / wall / threads (no part of the verdict)
    attempts: int = 1  # `--on-contention retry`: measurements made; this row is the last
    waited_s: float | None = None  # `--on-contention wait`: time waited for a quiet host before it
