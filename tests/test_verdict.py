"""The p99 verdict (bench.verdict) against known binomial figures."""

from __future__ import annotations

import math

import pytest

from bench.verdict import (
    FAIL,
    PASS,
    UNDECIDED,
    Verdict,
    binomial_cdf,
    binomial_sf,
    decide,
    fewest_to_pass,
    lower_bound,
    upper_bound,
)


def _exact_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 100, 0.01), (5, 1000, 0.01), (20, 1000, 0.01), (40, 50, 0.3), (3, 7, 0.5)]
)
def test_the_binomial_tails_match_the_exact_sums(k, n, p):
    assert binomial_cdf(k, n, p) == pytest.approx(_exact_cdf(k, n, p), rel=1e-9, abs=1e-15)
    exact_sf = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert binomial_sf(k, n, p) == pytest.approx(exact_sf, rel=1e-9, abs=1e-15)


def test_known_cases_of_the_95_percent_rule():
    # No request over: 0.99^n <= 0.05 from n = 299 (0.99^298 = 0.0500..): LoadGen's h for t = 0.
    assert fewest_to_pass(0.95) == 299 and fewest_to_pass(0.99) == 459
    assert decide(0, 298, 0.95) == UNDECIDED and decide(0, 299, 0.95) == PASS
    assert decide(0, 458, 0.99) == UNDECIDED and decide(0, 459, 0.99) == PASS
    # 3 of 1,000 over: P(X <= 3 | 1000, 1 %) = 0.0101 -> pass; 5 of 1,000: 0.066 -> undecided.
    assert decide(3, 1000, 0.95) == PASS and decide(5, 1000, 0.95) == UNDECIDED
    # 2 of 20 over: P(X >= 2 | 20, 1 %) = 0.0169 -> fail at 95 %, not at 99 %.
    assert decide(2, 20, 0.95) == FAIL and decide(2, 20, 0.99) == UNDECIDED
    # 1 % exactly over, however many requests: never a pass, never a fail.
    assert decide(100, 10_000, 0.95) == UNDECIDED


def test_the_bounds_are_clopper_pearson_and_agree_with_the_verdict():
    # Closed forms for k = 0 and k = n: upper = 1 - (1 - c)^(1/n), lower = (1 - c)^(1/n).
    assert upper_bound(0, 299, 0.95) == pytest.approx(1 - 0.05 ** (1 / 299), rel=1e-9)
    assert lower_bound(10, 10, 0.95) == pytest.approx(0.05 ** (1 / 10), rel=1e-9)
    assert lower_bound(0, 50, 0.95) == 0.0 and upper_bound(50, 50, 0.95) == 1.0
    for over, n in [(0, 299), (3, 1000), (5, 1000), (2, 20), (30, 1000)]:
        verdict = Verdict.of(over, n, 0.95)
        assert verdict.lower <= over / n <= verdict.upper
        assert (verdict.verdict == PASS) == (verdict.upper <= 0.01)
        assert (verdict.verdict == FAIL) == (verdict.lower > 0.01)
    assert "2 of 20 requests over the SLO" in Verdict.of(2, 20, 0.95).reason(0.95)
