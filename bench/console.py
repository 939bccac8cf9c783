"""What a person sees in the terminal: live progress per scenario and the closing table."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from bench.capacity.host import summary
from bench.eta import RemainingTime, shapes_of
from bench.format.units import MIB, duration_readable, ms_fixed
from bench.results.record import ResultRecord
from bench.results.timeline import overhead_line
from bench.suite.scenarios import Scenario


class ConsoleProgress:
    """One line per scenario; on a terminal the line also shows the live phase and time.

    Each finished line ends with how many scenarios are left and about how long they will take
    (bench.eta), from the wall time between finished rows: everything a row costs (artifacts,
    capacity steps, history writes) counts, and on a fleet, where rows end side by side, the
    time between them is what the remaining rows cost. `scenarios`: those the run will measure,
    for their shapes; `clock`: seconds, monotonic (tests pass a fake one)."""

    def __init__(
        self,
        stream: TextIO = sys.stderr,
        scenarios: Iterable[Scenario] = (),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream
        self.live = stream.isatty()
        self._prefix = ""
        self._left = 0
        self._remaining = RemainingTime(shapes_of(scenarios))
        self._clock = clock
        self._last_finished_s = clock()

    def scenario_started(self, index: int, total: int, scenario_id: str) -> None:
        self._prefix = f"[{index}/{total}] {scenario_id}"
        self._left = total - index
        if not self.live:
            print(f"{self._prefix} ...", file=self.stream, flush=True)

    def scenario_phase(self, phase: str, elapsed_s: float) -> None:
        if self.live:
            print(f"\r\033[K{self._prefix}  {phase}  {elapsed_s:5.1f} s", end="", file=self.stream, flush=True)

    def scenario_finished(self, record: ResultRecord) -> None:
        if record.status == "ok" and record.latency_s is not None:
            detail = (
                f"ok  median {ms_fixed(record.latency_s.median)}  p99 {ms_fixed(record.latency_s.p99)}  "
                f"({record.latency_s.rounds} rounds, {record.duration_s or 0:.1f} s"
                f"{', cached artifact' if record.artifact_cached else ''})"
            )
            if record.contended:
                detail += "  CONTENDED: other processes took the CPU while it was timed"
        else:
            detail = f"{record.status}: {(record.reason or '').splitlines()[0]}"
        now_s = self._clock()
        self._remaining.finished(record.scenario_id, now_s - self._last_finished_s)
        self._last_finished_s = now_s
        estimate_s = self._remaining.estimate_s(self._left)
        if self._left and estimate_s is not None:
            detail += f"  [{self._left} left, about {duration_readable(estimate_s)}]"
        lead = "\r\033[K" if self.live else ""
        print(f"{lead}{self._prefix}  {detail}", file=self.stream, flush=True)
        if record.capacity is not None:
            print(f"    {summary(record.capacity)}", file=self.stream, flush=True)


def summary_table(records: Sequence[ResultRecord]) -> str:
    """A plain-text table: scenario, median and p99 latency, throughput, peak RSS, status."""
    header = ("scenario", "median ms", "p99 ms", "samples/s", "peak RSS MiB", "status")
    rows = [header]
    for r in records:
        latency = r.latency_s
        rows.append(
            (
                r.scenario_id,
                f"{latency.median * 1e3:.3f}" if latency else "-",
                f"{latency.p99 * 1e3:.3f}" if latency else "-",
                f"{r.throughput_samples_per_s:.1f}" if r.throughput_samples_per_s else "-",
                f"{r.rss_bytes.peak / MIB:.1f}" if r.rss_bytes.peak else "-",
                f"{r.status} (contended)" if r.contended else r.status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        numbers = [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)]
        cells = [row[0].ljust(widths[0]), *numbers, row[-1]]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    overhead = overhead_line(records)
    if overhead:
        lines.append(f"\n{overhead}")
    busy = sum(r.contended for r in records)
    if busy:
        lines.append(
            f"\n{busy} row(s) measured on a contended host (other processes or the hypervisor took the CPU "
            "while they were timed): their times are not comparable; bench compare calls them inconclusive"
        )
    return "\n".join(lines)
