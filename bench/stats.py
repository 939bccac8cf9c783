"""Latency statistics from raw per-round times.

Percentiles use the nearest-rank rule (as MLPerf LoadGen and OpenVINO benchmark_app
do): the p-th percentile of n sorted values is the value at rank ceil(p/100 * n). It is
always an observed time, never an interpolation. The median is the usual middle value
(the mean of the two middle ones for even n), as pytest-benchmark reports it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

PERCENTILE_RULE = "nearest-rank: value at rank ceil(p/100 * n) of the sorted round times"


def nearest_rank(sorted_values: Sequence[float], percent: float) -> float:
    if not sorted_values:
        raise ValueError("no values")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    # Exact arithmetic: in floats 7 / 100 * 100 is 7.000000000000001, whose ceiling is 8.
    rank = math.ceil(Fraction(str(percent)) * len(sorted_values) / 100)
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class LatencyStats:
    """Seconds per round (one round = one inference call on one batch)."""

    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    stddev: float
    iqr: float
    rounds: int

    @classmethod
    def from_times(cls, times_s: Sequence[float]) -> LatencyStats:
        values = sorted(times_s)
        if not values:
            raise ValueError("no round times")
        return cls(
            min=values[0],
            mean=statistics.fmean(values),
            median=statistics.median(values),
            p90=nearest_rank(values, 90),
            p95=nearest_rank(values, 95),
            p99=nearest_rank(values, 99),
            max=values[-1],
            stddev=statistics.stdev(values) if len(values) > 1 else 0.0,
            iqr=nearest_rank(values, 75) - nearest_rank(values, 25),
            rounds=len(values),
        )


def coefficient_of_variation(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    return statistics.stdev(values) / statistics.fmean(values)
