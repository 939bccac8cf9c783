"""Server mode against the M/D/1 queue: measured p99 at a given load, and the searched rate, vs the prediction.

One instance of a sleep-based service (tests/support/sleepy_service.py: each call sleeps --service-ms,
using almost no CPU) is an M/D/1 server. For loads rho = 0.3, 0.5, 0.7 one step of about
--requests requests measures the p99; bench.capacity.queueing predicts it with D = the median service
time the instance measured. Then bench's full search (capacity defaults, layout 1x1) at an
SLO of 5 x D is set against the rate where the M/D/1 p99 reaches that SLO: the confirmed rate
should lie somewhat below it (a pass needs the over-SLO share clearly below 1 %).

    PYTHONPATH=. python benchmarks/capacity_md1.py [--service-ms 8] [--requests 1500]

A busy host delays the instance's wake-ups: the measured p99 then runs above the prediction.
This is why this is a benchmark and not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import runtimes
from bench.capacity.host import InstanceGroup, measure_capacity, server_step
from bench.capacity.loadgen import StepLimits
from bench.capacity.queueing import md1_p99_s, md1_rate_at_slo
from bench.models.sources import ModelSource
from bench.suite.scenarios import CapacityPolicy, MeasurePolicy, Scenario

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service-ms", type=float, default=8.0, help="the sleep per call")
    parser.add_argument("--requests", type=int, default=1500, help="requests per fixed-load step")
    args = parser.parse_args()
    source = ModelSource(
        name="sleepy",
        kind="factory",
        input_shape=(4,),
        architecture="sleepy_service:build",
        kwargs={"ms": args.service_ms},
        search_path=str(TESTS),
    )
    scenario = Scenario(
        model="sleepy",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load="eager",
        input_shape=(4,),
        measure=MeasurePolicy(),
        timeout_s=600,
        source=source,
    )
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-md1-") as folder:
        root = Path(folder)
        artifact = runtimes.prepare_artifact(scenario, root / "cache")
        with InstanceGroup(scenario, artifact.path, [[0]], root / "logs", [1]) as group:
            _, raw = server_step(group, 1, 20.0, 1, StepLimits(1.0, 100, 10.0), 1.0)
            service_s = statistics.median((raw["ended"] - raw["started"]).tolist())
            print(f"service time (median, lightly loaded): {service_s * 1e3:.2f} ms")
            for index, rho in enumerate((0.3, 0.5, 0.7)):
                rate = rho / service_s
                limits = StepLimits(args.requests / rate, args.requests, 2 * args.requests / rate)
                step, _ = server_step(group, 1, rate, 10 + index, limits, 10.0)
                predicted = md1_p99_s(rate, service_s)
                p99 = step.latency_p99_s
                print(
                    f"rho {rho}: {rate:.1f}/s, {step.requests} requests: p99 {p99 * 1e3:.1f} ms, "
                    f"M/D/1 {predicted * 1e3:.1f} ms ({p99 / predicted:.2f}x)",
                    flush=True,
                )
        slo_ms = 5 * service_s * 1e3
        policy = CapacityPolicy(slo_p99_ms=slo_ms, layouts=("1x1",), sweep=False)
        figures = measure_capacity(
            dataclasses.replace(scenario, capacity=policy),
            artifact.path,
            root / "search",
            lambda _: None,
            lambda line: print(f"  {line}", flush=True),
        )
    layout = figures.layouts[0]
    crossing = md1_rate_at_slo(layout.closed_loop.latency_s.median, slo_ms / 1e3)
    rate = layout.server.max_rate_per_s if layout.server else None
    ratio = f" ({rate / crossing:.2f}x)" if rate else ""
    print(
        f"SLO {slo_ms:.1f} ms: bench's confirmed rate {rate and f'{rate:.1f}/s'}{ratio}; "
        f"M/D/1 p99 reaches the SLO at {crossing:.1f}/s; load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
