"""The metric catalog: each figure a reader shows or compares (median, p99, throughput, peak RSS...),
where it sits in a ResultRecord (`Metric.of` reads it from a record), its unit, and which way is better."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.format.units import MIB, ms_readable
from bench.results.record import ResultRecord


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    unit: str  # "s", "samples/s" or "bytes"
    column: str  # column of the results table
    path: tuple[str, ...]  # where it is in a ResultRecord: attribute names, outermost first
    higher_is_better: bool = False
    from_rounds: str | None = None  # statistic of the raw round times that gives it: median, p99, mean

    def of(self, record: ResultRecord) -> float | None:
        """The figure in `record`; None when it is absent (it or the block holding it is None), not a number
        (a hand-made row), or not finite. A path naming no field raises AttributeError: never a silent None."""
        value: Any = record
        for name in self.path:
            if value is None:
                return None
            value = getattr(value, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)

    def display(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.unit == "s":
            return ms_readable(value)
        if self.unit == "bytes":
            return f"{value / MIB:.1f} MiB"
        return f"{value:.4g} {self.unit}" if value < 1000 else f"{value:.0f} {self.unit}"

    @property
    def display_unit(self) -> str:
        return {"s": "ms", "bytes": "MiB"}.get(self.unit, self.unit)

    def scaled(self, value: float | None) -> float | None:
        """The value in display units (ms, MiB)."""
        if value is None:
            return None
        return value * 1e3 if self.unit == "s" else value / MIB if self.unit == "bytes" else value


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("median", "median latency", "s", "median_s", ("latency_s", "median"), from_rounds="median"),
        Metric("p90", "p90 latency", "s", "p90_s", ("latency_s", "p90")),
        Metric("p99", "p99 latency", "s", "p99_s", ("latency_s", "p99"), from_rounds="p99"),
        Metric("mean", "mean latency", "s", "mean_s", ("latency_s", "mean"), from_rounds="mean"),
        Metric(
            "throughput",
            "throughput",
            "samples/s",
            "throughput_samples_per_s",
            ("throughput_samples_per_s",),
            higher_is_better=True,
            from_rounds="mean",
        ),
        Metric("load", "load time", "s", "load_s", ("load_s",)),
        Metric("first_inference", "first inference", "s", "first_inference_s", ("first_inference_s",)),
        Metric("peak_rss", "peak RSS (sampled)", "bytes", "peak_rss_bytes", ("rss_bytes", "peak")),
        Metric(
            "peak_rss_kernel",
            "peak RSS (kernel VmHWM)",
            "bytes",
            "peak_rss_kernel_bytes",
            ("peak_rss_kernel_bytes",),
        ),
    )
}
