"""The p99 verdict (bench.capacity.verdict) against known binomial figures."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from bench.capacity.verdict import (
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


# (over, requests, confidence, verdict, lower, upper) from bench/capacity/verdict.py at commit 362afc7, before it used
# scipy: its own lgamma-based binomial tails and a 45-step bisection for the bounds (~3e-14 absolute).
OLD_IMPLEMENTATION = [
    (0, 1, 0.95, UNDECIDED, 0.0, 0.9500000000000028),
    (0, 1, 0.99, UNDECIDED, 0.0, 0.9899999999999949),
    (1, 1, 0.95, FAIL, 0.04999999999999716, 1.0),
    (1, 1, 0.99, FAIL, 0.010000000000005116, 1.0),
    (0, 20, 0.95, UNDECIDED, 0.0, 0.1391083406682725),
    (0, 20, 0.99, UNDECIDED, 0.0, 0.20567176527571007),
    (1, 20, 0.95, UNDECIDED, 0.0025613787765195184, 0.2161061642068347),
    (1, 20, 0.99, UNDECIDED, 0.0005023905522563155, 0.2887903679930304),
    (2, 20, 0.95, FAIL, 0.018065203085413373, 0.28261852488584793),
    (2, 20, 0.99, UNDECIDED, 0.007591856659459495, 0.35833526264089244),
    (5, 20, 0.95, FAIL, 0.10408083591012485, 0.45558240400175976),
    (5, 20, 0.99, FAIL, 0.06884501880124105, 0.5321064089534531),
    (0, 100, 0.95, UNDECIDED, 0.0, 0.029513049607047037),
    (0, 100, 0.99, UNDECIDED, 0.0, 0.04500741397855279),
    (1, 100, 0.95, UNDECIDED, 0.0005128014162636418, 0.04655981145354815),
    (1, 100, 0.99, UNDECIDED, 0.000100498308242436, 0.06454273204859362),
    (3, 100, 0.95, UNDECIDED, 0.008225829107644245, 0.07571079374982048),
    (3, 100, 0.99, UNDECIDED, 0.004394976455884603, 0.09697104526533451),
    (0, 298, 0.95, UNDECIDED, 0.0, 0.010002432437673292),
    (0, 298, 0.99, UNDECIDED, 0.0, 0.015334797205881046),
    (0, 299, 0.95, PASS, 0.0, 0.009969146792897732),
    (0, 299, 0.99, UNDECIDED, 0.0, 0.015283904206611965),
    (0, 459, 0.95, PASS, 0.0, 0.006505397515056188),
    (0, 459, 0.99, PASS, 0.0, 0.009982887366120963),
    (3, 1000, 0.95, PASS, 0.0008181753982086093, 0.007735244718489298),
    (3, 1000, 0.99, UNDECIDED, 0.0004363865640897302, 0.010009791991720363),
    (5, 1000, 0.95, UNDECIDED, 0.001972153141807098, 0.010484076911424722),
    (5, 1000, 0.99, UNDECIDED, 0.0012808499906071802, 0.013055421233687525),
    (10, 1000, 0.95, UNDECIDED, 0.005435140144712136, 0.01690317512056083),
    (10, 1000, 0.99, UNDECIDED, 0.004140298065138381, 0.02004260590088336),
    (30, 1000, 0.95, FAIL, 0.021674784293153948, 0.04047223728086635),
    (30, 1000, 0.99, FAIL, 0.01883963971353353, 0.04505042919201685),
    (500, 1000, 0.95, FAIL, 0.4735177312357024, 0.5264822687642976),
    (500, 1000, 0.99, FAIL, 0.46277806676100397, 0.537221933238996),
    (999, 1000, 0.95, FAIL, 0.9952650064245034, 0.9999487080210798),
    (999, 1000, 0.99, FAIL, 0.9933803316043424, 0.9999899497146458),
    (50, 5000, 0.95, UNDECIDED, 0.007800792743395846, 0.012640571638726783),
    (50, 5000, 0.99, UNDECIDED, 0.007016310255679059, 0.013787078433963984),
    (80, 5000, 0.95, FAIL, 0.013192982248497742, 0.019238412800731908),
    (80, 5000, 0.99, FAIL, 0.0121569214261541, 0.02063046455701567),
    (100, 10000, 0.95, UNDECIDED, 0.00842019893674717, 0.01179723397133614),
    (100, 10000, 0.99, UNDECIDED, 0.007829753046578958, 0.012567582048674808),
    (0, 20000, 0.95, PASS, 0.0, 0.0001497753962240722),
    (0, 20000, 0.99, PASS, 0.0, 0.00023023200184013604),
    (250, 20000, 0.95, FAIL, 0.011235550743506906, 0.013871161585640834),
    (250, 20000, 0.99, FAIL, 0.010743929932644392, 0.014451741040275579),
]


@pytest.mark.parametrize(("over", "requests", "confidence", "verdict", "lower", "upper"), OLD_IMPLEMENTATION)
def test_scipy_gives_the_old_implementations_verdicts_and_bounds(over, requests, confidence, verdict, lower, upper):
    got = Verdict.of(over, requests, confidence)
    assert got.verdict == verdict
    assert got.lower == pytest.approx(lower, rel=1e-9, abs=1e-13)
    assert got.upper == pytest.approx(upper, rel=1e-9, abs=1e-13)


def _exact_cdfs_at_one_percent(n: int) -> list[Fraction]:
    """P(X <= k | n, 1 %) for k = 0..n in rational arithmetic: no rounding, so a verdict at its threshold is exact."""
    cumulative, total = [], 0
    for i in range(n + 1):
        total += math.comb(n, i) * 99 ** (n - i)
        cumulative.append(Fraction(total, 100**n))
    return cumulative


@pytest.mark.parametrize("requests", [20, 150, 299, 700, 2000])
def test_every_verdict_on_a_grid_matches_exact_rational_tails(requests):
    cdfs = _exact_cdfs_at_one_percent(requests)
    for confidence in (Fraction(95, 100), Fraction(99, 100)):
        for over in range(requests + 1):
            sf = 1 - cdfs[over - 1] if over > 0 else Fraction(1)
            if cdfs[over] <= 1 - confidence:
                expected = PASS
            elif over > requests * Fraction(1, 100) and sf <= 1 - confidence:
                expected = FAIL
            else:
                expected = UNDECIDED
            assert decide(over, requests, float(confidence)) == expected, (over, requests, confidence)


@pytest.mark.parametrize(("over", "requests"), [(1, 20), (3, 1000), (30, 1000), (7, 64), (150, 300)])
def test_the_bounds_solve_the_clopper_pearson_equations(over, requests):
    # The upper bound u makes P(X <= over | requests, u) = 1 - c; the lower bound l makes P(X >= over | l) = 1 - c.
    for confidence in (0.9, 0.95, 0.99):
        upper, lower = upper_bound(over, requests, confidence), lower_bound(over, requests, confidence)
        assert _exact_cdf(over, requests, upper) == pytest.approx(1 - confidence, rel=1e-9)
        assert 1 - _exact_cdf(over - 1, requests, lower) == pytest.approx(1 - confidence, rel=1e-9)
