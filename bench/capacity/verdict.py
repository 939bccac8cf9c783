"""A server step's p99 verdict with stated confidence: a binomial bound on the share of requests over the SLO.

"p99 within the SLO" means that at most 1 % of requests take longer than the SLO. A step of
n requests of which k were over the SLO is judged on the true over-SLO fraction q, with the
one-sided Clopper-Pearson bounds at `confidence` c:

- **pass** when the upper bound on q is within 1 %: P(X <= k | n, 1 %) <= 1 - c;
- **fail** when the lower bound on q is beyond 1 %: P(X >= k | n, 1 %) <= 1 - c;
- otherwise **undecided**: the step runs on, and a step that ends undecided (its time limit)
  is `inconclusive`, which the search treats as not passed.

This is MLPerf LoadGen's Server early-stopping rule (loadgen/early_stopping.cc,
results.cc: a run passes when queries_issued >= h + t, h being the fewest passing queries
that make BetaRegularized(p - d, h, 1 + t) <= 1 - c for t over-latency queries), with its
tolerance d = 0 and confidence c = 0.99 there, 0.95 by default here (`confidence:`). LoadGen
only applies the passing side and runs for a fixed 10 minutes; the failing side and the
extension are bench's, so that a step lasts only as long as its verdict needs. Like LoadGen,
it treats requests as independent trials, which queueing makes only approximately true.

The binomial tails and the bounds' Beta quantiles are scipy.special's `bdtr`, `bdtrc` and
`betaincinv`: the functions behind `scipy.stats.binom.cdf`/`.sf` and `scipy.stats.beta.ppf`
(Clopper-Pearson as in `binomtest(...).proportion_ci(method="exact")`), imported without
scipy.stats, whose import cost ~0.7 s more on `bench --help` (this module is imported by the
CLI at start-up; scipy.special adds ~0.13 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import bdtr, bdtrc, betaincinv

TAIL = 0.01  # p99: at most this fraction of requests over the SLO
PASS, FAIL, UNDECIDED = "pass", "fail", "undecided"


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p) (scipy's bdtr, which is NaN outside 0 <= k <= n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return float(bdtr(k, n, p))


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): scipy's bdtrc is P(X > k), hence k - 1."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(bdtrc(k - 1, n, p))


def upper_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on the fraction, from k of n: Beta(k + 1, n - k)'s c-quantile."""
    if n == 0 or k >= n:
        return 1.0
    return float(betaincinv(k + 1, n - k, confidence))


def lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound on the fraction, from k of n: Beta(k, n - k + 1)'s (1 - c)-quantile."""
    if k == 0:
        return 0.0
    return float(betaincinv(k, n - k + 1, 1 - confidence))


def decide(over: int, requests: int, confidence: float) -> str:
    """PASS, FAIL or UNDECIDED for `over` of `requests` over the SLO (the rule in this module's docstring)."""
    if requests == 0:
        return UNDECIDED
    if binomial_cdf(over, requests, TAIL) <= 1 - confidence:
        return PASS
    if over > requests * TAIL and binomial_sf(over, requests, TAIL) <= 1 - confidence:
        return FAIL
    return UNDECIDED


def fewest_to_pass(confidence: float) -> int:
    """The fewest requests a step can pass with (all of them within the SLO): ceil(ln(1 - c) / ln(0.99))."""
    return math.ceil(math.log(1 - confidence) / math.log1p(-TAIL))


@dataclass(frozen=True)
class Verdict:
    """A step's verdict and the figures it rests on."""

    verdict: str  # PASS, FAIL or UNDECIDED
    over: int
    requests: int
    upper: float  # bounds on the true over-SLO fraction at `confidence`
    lower: float

    @classmethod
    def of(cls, over: int, requests: int, confidence: float) -> Verdict:
        return cls(
            decide(over, requests, confidence),
            over,
            requests,
            upper_bound(over, requests, confidence),
            lower_bound(over, requests, confidence),
        )

    def reason(self, confidence: float) -> str:
        shares = f"{self.over} of {self.requests} requests over the SLO"
        bounds = f"the true share is {self.lower:.2%} to {self.upper:.2%} at {confidence:.0%} confidence"
        if self.verdict == PASS:
            return f"pass: {shares}; {bounds}, within {TAIL:.0%}"
        if self.verdict == FAIL:
            return f"fail: {shares}; {bounds}, beyond {TAIL:.0%}"
        return f"undecided: {shares}; {bounds}, which straddles {TAIL:.0%}"


RULE = (
    "p99 verdict: pass when the one-sided Clopper-Pearson upper bound on the share of requests over the SLO "
    "is <= 1 %, fail when the lower bound is > 1 % (confidence {confidence:.0%}; MLPerf LoadGen's Server "
    "early-stopping rule with d = 0), else the step runs on up to step_max_duration_s and is inconclusive"
)
