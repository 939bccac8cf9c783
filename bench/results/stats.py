"""Latency statistics from raw per-round times: the figures of one run (LatencyStats), and the
resampling that says how far they can be trusted (block bootstrap, drift within a run).

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
from typing import Any

PERCENTILE_RULE = "nearest-rank: value at rank ceil(p/100 * n) of the sorted round times"


def nearest_rank_index(n: int, percent: float) -> int:
    """The index, in n sorted values, of the p-th percentile: rank ceil(p/100 * n), at least 1."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    # Exact arithmetic: in floats 7 / 100 * 100 is 7.000000000000001, whose ceiling is 8.
    rank = math.ceil(Fraction(str(percent)) * n / 100)
    return max(rank, 1) - 1


def nearest_rank(sorted_values: Sequence[float], percent: float) -> float:
    if not sorted_values:
        raise ValueError("no values")
    return sorted_values[nearest_rank_index(len(sorted_values), percent)]


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


# --- resampling: how far a statistic of one run can be trusted ----------------------------------


MAX_BLOCKS = 20


def block_length(n: int) -> int:
    """Rounds per bootstrap block: about sqrt(n), and long enough that a run is at most
    MAX_BLOCKS blocks, so that a block spans a good part of the run: the interval then sees
    how the statistic varies between stretches of the run, as it varies between runs."""
    return max(1, round(math.sqrt(n)), -(-n // MAX_BLOCKS))


def bootstrap_statistics(times: Sequence[float], resamples: int, rng: Any, block: int | None = None) -> dict[str, Any]:
    """Median, p99 (nearest rank) and mean of `resamples` circular block-bootstrap resamples."""
    import numpy as np

    x = np.asarray(times, dtype=float)
    n = len(x)
    block = block or block_length(n)
    blocks = -(-n // block)
    offsets = np.arange(block)
    k_lo, k_hi, k99 = (n - 1) // 2, n // 2, nearest_rank_index(n, 99)
    out = {name: np.empty(resamples) for name in ("median", "p99", "mean")}
    chunk = max(1, 2_000_000 // (blocks * block))
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        starts = rng.integers(0, n, size=(r, blocks))
        index = ((starts[:, :, None] + offsets) % n).reshape(r, blocks * block)[:, :n]
        sample = x[index]
        out["mean"][start : start + r] = sample.mean(axis=1)
        part = np.partition(sample, sorted({k_lo, k_hi, k99}), axis=1)
        out["median"][start : start + r] = (part[:, k_lo] + part[:, k_hi]) / 2
        out["p99"][start : start + r] = part[:, k99]
    return out


def point_statistics(times: Sequence[float]) -> dict[str, float]:
    values = sorted(times)
    n = len(values)
    return {
        "median": (values[(n - 1) // 2] + values[n // 2]) / 2,
        "p99": values[nearest_rank_index(n, 99)],
        "mean": math.fsum(values) / n,
    }


DRIFT_CHUNKS = 50  # at most; fewer for short runs, and no drift below 10 chunks


# Rounds a chunk needs for its statistic to mean something (a p99 of fewer than 100 is the max).
_DRIFT_MIN_CHUNK = {"median": 20, "mean": 20, "p99": 100}


_DRIFT_SHUFFLES = 20


def _chunk_statistic(chunks: Any, stat: str) -> Any:
    import numpy as np

    if stat == "mean":
        return chunks.mean(axis=1)
    if stat == "median":
        return np.median(chunks, axis=1)
    k = nearest_rank_index(chunks.shape[1], 99)
    return np.partition(chunks, k, axis=1)[:, k]


def drift(times: Sequence[float], stat: str, rng: Any) -> float | None:
    """How far `stat` wandered over the run, beyond what chance alone would give.

    The rounds are cut, in time order, into up to 50 consecutive chunks (of at least 20
    rounds; 100 for p99); the spread of the chunk statistics (max / min - 1) is compared with
    the same spread after shuffling the rounds 20 times (which keeps their distribution and
    destroys their order). When the time-ordered spread is 1.25 times every shuffled one, the
    run drifted, by that spread: a run during which the machine switched between a quiet and
    a busy state (a neighbour on the sibling hyperthread, a frequency change) gives about the
    size of that switch. Otherwise 0: a steady run. None when there would be fewer than 10
    chunks. The full range, not an inter-decile one, on purpose: measured on a shared
    2-core machine, ignoring the odd chunks let identical back-to-back runs be flagged.
    """
    import numpy as np

    n = len(times)
    chunks = min(DRIFT_CHUNKS, n // _DRIFT_MIN_CHUNK[stat])
    if chunks < 10:
        return None
    size = n // chunks
    x = np.asarray(times[: size * chunks], dtype=float)

    def spread(values: Any) -> float:
        chunk_stats = _chunk_statistic(values.reshape(chunks, size), stat)
        return float(chunk_stats.max() / chunk_stats.min() - 1)

    observed = spread(x)
    shuffled = max(spread(rng.permutation(x)) for _ in range(_DRIFT_SHUFFLES))
    # Order mattered (the time-ordered spread is well past all 20 shuffled ones): the run
    # drifted, by about the spread seen in time order. Otherwise the spread is what chance
    # gives chunks of this size: no drift.
    return observed if observed > 1.25 * shuffled else 0.0
