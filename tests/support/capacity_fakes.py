"""Hand-made capacity figures (bench.results.record.CapacityFigures) for planner, report and CLI tests, and a
fake serving host whose server steps are computed, not timed (`FakeHost`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace

from bench.capacity.loadgen import StepLimits, StepTimes, evaluate_step, poisson_schedule
from bench.capacity.stalls import stall_floor
from bench.capacity.verdict import RULE, lower_bound, upper_bound
from bench.results.record import (
    CapacityFigures,
    ClosedLoopFigures,
    GenerationServerFigures,
    GenerationStepFigures,
    InstanceMemory,
    LayoutFigures,
    ResultRecord,
    ServerFigures,
    ServerStep,
)
from bench.results.stats import LatencyStats

MIB = 1024 * 1024


def step(rate: float, p99_s: float, slo_s: float, *, valid: bool = True, lower_bound: bool = False) -> ServerStep:
    passed = valid and not lower_bound and p99_s <= slo_s
    reasons = [] if passed else (["too few requests"] if not valid else [f"p99 {p99_s * 1e3:g} ms over the SLO"])
    over = 2 if passed else 40  # of 1000: a pass and a fail of the 95 % rule
    return ServerStep(
        rate_per_s=rate,
        requests=1000,
        completed=1000,
        duration_s=1.0,
        achieved_per_s=rate,
        latency_p50_s=p99_s / 3,
        latency_p90_s=p99_s / 2,
        latency_p99_s=p99_s,
        latency_max_s=p99_s * 1.2,
        p99_lower_bound=lower_bound,
        wait_p99_s=p99_s / 2,
        service_p99_s=p99_s / 2,
        send_lag_p99_s=1e-4,
        loadgen_cpu_s=0.01,
        loadgen_cpu_fraction=0.01,
        instances_cpu_s=0.5,
        valid=valid,
        passed=passed,
        reasons=reasons,
        over_slo=over,
        confidence=0.95,
        verdict="pass" if passed else "fail",
    )


def closed(samples_per_s: float, p99_s: float, instances: int = 1) -> ClosedLoopFigures:
    latency = LatencyStats.from_times([p99_s / 2] * 98 + [p99_s] * 2)
    return ClosedLoopFigures(
        batch_size=1, duration_s=1.0, samples_per_s=samples_per_s, requests_per_s=samples_per_s, latency_s=latency
    )


def layout(
    instances: int,
    threads: int,
    steps: list[tuple[float, float]],
    slo_s: float,
    *,
    single_p99_s: float = 0.002,
    uss_mib: float = 300,
    rss_mib: float = 500,
    requested: bool = True,
) -> LayoutFigures:
    """A measured layout whose server steps are (rate, p99 seconds) pairs."""
    server_steps = [step(rate, p99, slo_s) for rate, p99 in steps]
    passing = [s.rate_per_s for s in server_steps if s.passed]
    return LayoutFigures(
        layout=f"{instances}x{threads}",
        instances=instances,
        threads_per_instance=threads,
        requested=requested,
        status="ok",
        cores=[[i] for i in range(instances)],
        closed_loop=closed(1000.0 * instances, single_p99_s, instances),
        offline=closed(5000.0 * instances, single_p99_s * 10, instances),
        server=ServerFigures(
            slo_p99_s=slo_s,
            max_rate_per_s=max(passing) if passing else None,
            stop_reason="converged",
            min_duration_s=1.0,
            min_requests=500,
            steps=server_steps,
            verdict_rule=RULE.format(confidence=0.95),
            confirmed=bool(passing),
        ),
        memory=[
            InstanceMemory(i, int(rss_mib * MIB), int(uss_mib * MIB), int((uss_mib + 50) * MIB), int(rss_mib * MIB))
            for i in range(instances)
        ],
    )


def stalled(figures: LayoutFigures, slo_s: float, over: int = 12, requests: int = 1000) -> LayoutFigures:
    """The layout with a stall floor step at 12.45/s (utilisation 0.15) of `over` of `requests` over the SLO:
    12 of 1,000 (1.2 %) limits the rate, 1 of 1,000 does not."""
    assert figures.server is not None
    floor_step = dataclasses.replace(
        step(12.45, slo_s / 2, slo_s),
        requests=requests,
        over_slo=over,
        over_slo_lower_bound=lower_bound(over, requests, 0.95),
        over_slo_upper_bound=upper_bound(over, requests, 0.95),
    )
    floor = stall_floor(floor_step, slo_s, utilisation=0.15, queueing_share=0.0003)
    return dataclasses.replace(figures, server=dataclasses.replace(figures.server, stall_floor=floor))


def capacity(layouts: list[LayoutFigures], slo_s: float, usable_cores: int = 2) -> CapacityFigures:
    best = max(
        (f for f in layouts if f.requested and f.server and f.server.max_rate_per_s),
        key=lambda f: f.server.max_rate_per_s,
        default=None,
    )
    return CapacityFigures(
        status="ok",
        note=None,
        slo_p99_s=slo_s,
        usable_cores=usable_cores,
        best_layout=best.layout if best else None,
        layouts=layouts,
        percentile_rule="nearest-rank",
    )


def record(figures: CapacityFigures | None, scenario_id: str = "tiny_mlp-b1-t1-fp32-eager") -> ResultRecord:
    return ResultRecord(
        run_id="r",
        scenario_id=scenario_id,
        suite="s",
        model="tiny_mlp",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load="eager",
        runtime="torch",
        input_shape=[64],
        status="ok",
        capacity=figures,
    )


def two_core_run(slo_s: float = 0.05) -> CapacityFigures:
    """2x1 serves 1,800/s at the SLO (1x1: 1,000/s), 1x2 serves 1,200/s, on a 2-core machine."""
    return capacity(
        [
            layout(2, 1, [(900, 0.01), (1800, 0.03), (2000, 0.09), (3600, 0.5)], slo_s),
            layout(1, 2, [(600, 0.005), (1200, 0.02), (1400, 0.08), (2400, 0.4)], slo_s),
            layout(1, 1, [(500, 0.004), (1000, 0.02), (1100, 0.07), (2000, 0.3)], slo_s, requested=False),
        ],
        slo_s,
    )


@dataclass
class FakeHost:
    """One instance of constant `service_s` calls, as bench.capacity.host.server_step's stand-in: arrivals from the
    step's own Poisson schedule (to its max_duration_s), queued in order (Lindley's recursion); with `stall_every`,
    every stall_every-th request ends `stall_s` late (the host stalled its wake-up or its reply; the instance
    goes on), so 1 / stall_every of the requests are over an SLO below service_s + stall_s at any rate. No clock,
    no sleep."""

    service_s: float
    stall_every: int | None = None
    stall_s: float = 0.0

    group = SimpleNamespace(scenario=SimpleNamespace(threads=1, seed=0))  # what search_server reads of a group

    def server_step(self, group, k, rate, seed, limits: StepLimits, slo_s, batching=None, mix=None):
        offsets = poisson_schedule(rate, limits, seed)
        started, ended, free_at = [], [], 0.0
        for i, arrival in enumerate(offsets):
            start = max(arrival, free_at)
            stalled = self.stall_every is not None and i % self.stall_every == self.stall_every - 1
            free_at = start + self.service_s
            started.append(start)
            ended.append(free_at + (self.stall_s if stalled else 0.0))
        times = StepTimes(offsets, offsets, started, ended, 0.0, drain_end=max(ended) + 1.0)
        step = evaluate_step(
            rate, times, limits, slo_s, loadgen_cpu_s=0.0, wall_s=offsets[-1], instances_cpu_s=None, seed=seed
        )
        return step, {}


def generation_layout(
    instances: int,
    rates: list[tuple[float, bool]],
    *,
    slo_ttft_s: float = 1.0,
    slo_tpot_s: float = 0.1,
    confirmed: bool = True,
    uss_mib: float = 300,
) -> LayoutFigures:
    """A generate: scenario's measured layout (one thread per instance) whose LLM server steps are (rate, passed)."""
    steps = []
    for rate, passed in rates:
        figures = GenerationStepFigures(
            ttft_p50_s=0.1,
            ttft_p90_s=0.3,
            ttft_p99_s=0.5 if passed else 2.0,
            tpot_p50_s=0.02,
            tpot_p90_s=0.03,
            tpot_p99_s=0.05,
            over_ttft=0 if passed else 40,
            over_tpot=0,
            goodput_per_s=rate if passed else rate / 2,
            output_tokens_per_s=16 * rate,
            output_tokens=16 * 1000,
            largest_batch=4,
            kv_cache_bytes=400_000,
            rss_bytes=int(500 * MIB),
        )
        steps.append(dataclasses.replace(step(rate, 0.5 if passed else 2.0, 1.0), generation=figures))
    passing = [rate for rate, passed in rates if passed]
    layout_figures = layout(instances, 1, [], 1.0, uss_mib=uss_mib)
    return dataclasses.replace(
        layout_figures,
        offline=None,
        server=None,
        generation_server=GenerationServerFigures(
            slo_ttft_s=slo_ttft_s,
            slo_tpot_s=slo_tpot_s,
            max_rate_per_s=max(passing) if passing and confirmed else None,
            stop_reason="converged" if confirmed else "no rate confirmed",
            min_duration_s=1.0,
            min_requests=0,
            max_batch=4,
            max_delay_s=0.005,
            prompt_tokens=[32, 128],
            new_tokens=[16, 4],
            weights=[3.0, 1.0],
            steps=steps,
            verdict_rule="a request is over the SLO when ...",
            confirmed=confirmed and bool(passing),
        ),
    )


def llm_capacity(layouts: list[LayoutFigures]) -> CapacityFigures:
    """A generate: scenario's capacity: no p99 SLO of its own (its layouts carry TTFT and TPOT SLOs)."""
    return dataclasses.replace(capacity(layouts, 1.0), slo_p99_s=None, best_layout=None)
