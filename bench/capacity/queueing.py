"""Queueing references for server mode: what an M/D/1 queue (Poisson arrivals, constant service) predicts.

Used to check bench.capacity.loadgen against theory (tests, benchmarks/capacity_md1.py) with a
sleep-based service of known, constant service time. The prediction is a simulation of
the queue by Lindley's recursion (exact for M/D/1 as the number of requests grows), since
the closed form of the M/D/1 waiting-time distribution (Erlang's alternating series) loses
all precision at the tails that matter here.
"""

from __future__ import annotations

import random


def md1_latencies_s(rate_per_s: float, service_s: float, requests: int, seed: int = 1) -> list[float]:
    """Every request's latency (wait + service) in an M/D/1 queue at `rate_per_s`, in arrival order."""
    rng = random.Random(seed)
    arrival = free_at = 0.0
    latencies = []
    for _ in range(requests):
        arrival += rng.expovariate(rate_per_s)
        free_at = max(arrival, free_at) + service_s
        latencies.append(free_at - arrival)
    return latencies


def md1_p99_s(rate_per_s: float, service_s: float, requests: int = 200_000, seed: int = 1) -> float:
    """The p99 latency (wait + service) of an M/D/1 queue at `rate_per_s`, nearest rank over `requests`."""
    latencies = sorted(md1_latencies_s(rate_per_s, service_s, requests, seed))
    return latencies[int(0.99 * requests)]


def md1_share_over(rate_per_s: float, service_s: float, slo_s: float, requests: int = 200_000, seed: int = 1) -> float:
    """The share of requests of an M/D/1 queue at `rate_per_s` whose latency is over `slo_s`."""
    return sum(latency > slo_s for latency in md1_latencies_s(rate_per_s, service_s, requests, seed)) / requests


def md1_rate_at_slo(service_s: float, slo_p99_s: float, requests: int = 50_000) -> float:
    """The rate at which the M/D/1 p99 reaches `slo_p99_s` (bisection on the load, to 0.1 %)."""
    low, high = 0.0, 1.0
    for _ in range(10):
        mid = (low + high) / 2
        low, high = (mid, high) if md1_p99_s(mid / service_s, service_s, requests) <= slo_p99_s else (low, mid)
    return low / service_s
