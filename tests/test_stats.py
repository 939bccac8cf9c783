"""Latency statistics: nearest-rank percentiles and the LatencyStats summary."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from bench.results.stats import PERCENTILE_RULE, LatencyStats, coefficient_of_variation, nearest_rank

ONE_TO_100 = [float(i) for i in range(1, 101)]


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(1, 1.0), (25, 25.0), (50, 50.0), (75, 75.0), (90, 90.0), (95, 95.0), (99, 99.0), (99.5, 100.0), (100, 100.0)],
)
def test_nearest_rank_on_1_to_100(percent, expected):
    assert nearest_rank(ONE_TO_100, percent) == expected


def test_nearest_rank_small_n_rounds_rank_up():
    ten = [float(i) for i in range(1, 11)]
    assert nearest_rank(ten, 99) == 10.0  # rank ceil(9.9) = 10: the max
    assert nearest_rank(ten, 95) == 10.0
    assert nearest_rank(ten, 90) == 9.0  # rank exactly 9
    assert nearest_rank(ten, 91) == 10.0
    assert nearest_rank(ten, 50) == 5.0
    assert nearest_rank(ten, 0.1) == 1.0  # rank ceil(0.01) = 1: the min


def test_nearest_rank_single_value():
    for percent in (0.001, 1, 50, 90, 99, 100):
        assert nearest_rank([0.25], percent) == 0.25


def test_nearest_rank_returns_an_observed_value_not_an_interpolation():
    values = [1.0, 2.0, 10.0, 100.0]
    for percent in range(1, 101):
        assert nearest_rank(values, percent) in values
    assert nearest_rank(values, 60) == 10.0  # rank ceil(2.4) = 3


def test_nearest_rank_used_percentiles_are_exact_for_many_sizes():
    # from_times uses p25, p75, p90, p95, p99: their rank must be ceil(p*n/100) exactly.
    for n in range(1, 2001):
        values = list(range(1, n + 1))
        for percent in (25, 75, 90, 95, 99):
            assert nearest_rank(values, percent) == -(-percent * n // 100), (n, percent)


@pytest.mark.parametrize(("percent", "n"), [(7, 100), (14, 100), (28, 100), (55, 100), (28, 25)])
def test_nearest_rank_exact_for_integer_ranks(percent, n):
    values = list(range(1, n + 1))
    assert nearest_rank(values, percent) == percent * n // 100


@pytest.mark.parametrize("percent", [0, -1, 100.0001, 101, float("nan")])
def test_nearest_rank_invalid_percent_raises(percent):
    with pytest.raises(ValueError, match="percent must be in"):
        nearest_rank(ONE_TO_100, percent)


def test_nearest_rank_empty_raises():
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 50)


def test_from_times_fields_match_statistics_module():
    rng = random.Random(1234)
    times = [rng.lognormvariate(-6, 0.3) for _ in range(257)]
    stats = LatencyStats.from_times(times)
    ordered = sorted(times)
    assert stats.rounds == 257
    assert stats.min == min(times)
    assert stats.max == max(times)
    assert stats.mean == pytest.approx(statistics.fmean(times), rel=1e-12)
    assert stats.median == statistics.median(times)
    assert stats.stddev == pytest.approx(statistics.stdev(times), rel=1e-12)
    assert stats.p90 == ordered[math.ceil(0.90 * 257) - 1]
    assert stats.p95 == ordered[math.ceil(0.95 * 257) - 1]
    assert stats.p99 == ordered[math.ceil(0.99 * 257) - 1]
    assert stats.iqr == ordered[math.ceil(0.75 * 257) - 1] - ordered[math.ceil(0.25 * 257) - 1]
    assert stats.min <= stats.median <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max


def test_from_times_known_data_unsorted_input():
    times = [float(i) for i in range(100, 0, -1)]  # 100..1, not sorted
    stats = LatencyStats.from_times(times)
    assert (stats.min, stats.max) == (1.0, 100.0)
    assert stats.median == 50.5  # mean of the two middle values for even n
    assert stats.mean == 50.5
    assert (stats.p90, stats.p95, stats.p99) == (90.0, 95.0, 99.0)
    assert stats.iqr == 75.0 - 25.0
    assert stats.stddev == pytest.approx(statistics.stdev(range(1, 101)))
    assert stats.rounds == 100
    assert times[0] == 100.0  # the caller's list is not sorted in place


def test_from_times_odd_count_median_is_middle_value():
    stats = LatencyStats.from_times([3.0, 1.0, 2.0])
    assert stats.median == 2.0
    assert stats.p99 == 3.0


def test_from_times_single_value():
    stats = LatencyStats.from_times([0.004])
    assert stats == LatencyStats(
        min=0.004, mean=0.004, median=0.004, p90=0.004, p95=0.004, p99=0.004, max=0.004, stddev=0.0, iqr=0.0, rounds=1
    )


def test_from_times_accepts_tuples():
    assert LatencyStats.from_times((2.0, 1.0)) == LatencyStats.from_times([1.0, 2.0])


def test_from_times_empty_raises():
    with pytest.raises(ValueError, match="no round times"):
        LatencyStats.from_times([])


def test_coefficient_of_variation():
    values = [9.0, 10.0, 11.0]
    assert coefficient_of_variation(values) == pytest.approx(statistics.stdev(values) / 10.0)
    assert coefficient_of_variation(values) == pytest.approx(0.1)
    assert coefficient_of_variation([5.0, 5.0, 5.0]) == 0.0
    # Scale free.
    assert coefficient_of_variation([0.009, 0.010, 0.011]) == pytest.approx(0.1)


@pytest.mark.parametrize("values", [[], [1.0]])
def test_coefficient_of_variation_needs_two_values(values):
    assert coefficient_of_variation(values) == 0.0


def test_percentile_rule_is_described():
    assert "nearest-rank" in PERCENTILE_RULE
    assert "ceil(p/100 * n)" in PERCENTILE_RULE
