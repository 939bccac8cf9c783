"""Does bench's max rate at a p99 SLO agree with MLPerf LoadGen's Server scenario on the same model?

Needs LoadGen's Python bindings, which this script does not install:

    python -m pip install mlcommons-loadgen==6.0.17      # or: pip install '.[loadgen]'

For each model: bench measures layout 1x1 (one instance pinned to one core, one thread) with
capacity's default settings at the SLO (bench.capacity.host, in this process). Then LoadGen's
Server scenario (PerformanceOnly) drives bench's own serving instance (bench.capacity.instance: the same
process, core, thread and input that bench's 1x1 layout serves with; LoadGen and this script on
the other cores), at rates around bench's answer (0.85x, 1x, 1.15x, 1.3x, and 0.7x when 0.85x
fails), each for --loadgen-seconds. So the two tools differ only in how they generate load and
judge the tail. (Driving the model in a thread of this process instead, as a first version did,
measured another server: its calls were 1.25x slower than the instance's and LoadGen then
disagreed.) A LoadGen run passes when its result is VALID: p99 within the target latency, and
LoadGen's early stopping (99 % confidence) satisfied.

Agreement (the issue's criterion): bench's rate lies between LoadGen's highest passing and
lowest failing rate within +-15 %, and LoadGen passes at 0.85x bench's rate.

    PYTHONPATH=. python benchmarks/loadgen_agreement.py [--out loadgen_agreement.json]

Both sides run on the same host at different times, and this VM's speed drifted (a model's
single call 1.8x slower for a stretch at a load average under 1): so bench searches again after
LoadGen's runs, a 200-call single-call check precedes each LoadGen run, and a model's comparison
counts only when the host was steady (single-call medians and bench's two answers within 15 %).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import mlperf_loadgen as lg

from bench import runtimes
from bench.capacity.host import InstanceGroup, closed_loop, measure_capacity, step_file
from bench.capacity.instance import REQUEST, STOP, step_region
from bench.environment import read_cpuinfo
from bench.suite.scenarios import CapacityPolicy, MeasurePolicy, Scenario

# name, model, batch size, input shape: a fast (~1 ms) and a slower (~10 ms) model on one core
MODELS = [
    ("fast", "tiny_mlp", 256, (64,)),
    ("slow", "mobilenet_v3_small", 1, (3, 112, 112)),
]
# The SLO: 5 x the median single call, and at least 2 x the 99th percentile of 200 single calls
# (on a busy host the tail is long, and an SLO below the single-stream p99 cannot be met), and at
# least 5 ms: on the 2-core VM, an instance idle between requests woke to a p99 of 4-5 ms for a
# 0.76 ms call even at 2 % load (bench, 2026-11-30 21:15 UTC), so a tighter SLO measures the VM's
# wake-up latency, not the model's capacity (LoadGen was INVALID there at every rate too).
SLO_FACTOR, SLO_TAIL_FACTOR, SLO_FLOOR_S = 5, 2, 0.005
# The most the host's speed (single-call median) and bench's two answers may differ for a steady host.
HOST_DRIFT_LIMIT = 0.15
FACTORS = (0.85, 1.0, 1.15, 1.3)


def single_call_s(group: InstanceGroup, batch_size: int) -> tuple[float, float]:
    """The median and 99th percentile of the serving instance's back-to-back calls for 2 s: the host's speed now."""
    figures, _ = closed_loop(group, 1, batch_size, 2.0)
    return figures.latency_s.median, figures.latency_s.p99


def loadgen_run(group: InstanceGroup, rate: float, slo_s: float, seconds: float, outdir: Path) -> dict:
    """One LoadGen Server run at `rate` against bench's own serving instance; its summary's verdict and p99.

    LoadGen's issue callback writes each query into the instance's request pipe, as bench's generator
    does; the instance serves in arrival order and writes each end time into the step file, which a
    completion thread polls (every 0.1 ms) to report the queries to LoadGen in that order."""
    slots_for = int(rate * seconds * 1.5) + 10_000  # LoadGen issues about rate x seconds queries
    instance = group.instances[0]
    with step_file(slots_for) as (path, slots):
        instance.send({"cmd": "serve", "requests": slots_for, "mixed": False, "path": path})
        instance.receive(group.timeout_s(0))  # "serving": blocked on the request pipe
        ended = slots[step_region("ended", slots_for)]
        ids: list[int] = []  # LoadGen's query id, by request number
        finished = threading.Event()

        def issue(samples) -> None:
            for sample in samples:
                if len(ids) == slots_for:
                    raise RuntimeError(f"LoadGen issued more than {slots_for} queries")
                ids.append(sample.id)
                os.write(group.request_fd, REQUEST.pack(len(ids) - 1))

        def complete() -> None:
            reported = 0
            while not finished.is_set() or reported < len(ids):
                done = reported
                while done < len(ids) and ended[done] != 0.0:
                    done += 1
                if done > reported:
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(ids[n], 0, 0) for n in range(reported, done)])
                    reported = done
                else:
                    time.sleep(0.0001)

        completer = threading.Thread(target=complete, daemon=True)
        completer.start()
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = lg.ConstructQSL(1024, 1024, lambda ids: None, lambda ids: None)
        settings = lg.TestSettings()
        settings.scenario = lg.TestScenario.Server
        settings.mode = lg.TestMode.PerformanceOnly
        settings.server_target_qps = rate
        settings.server_target_latency_ns = int(slo_s * 1e9)
        settings.server_target_latency_percentile = 0.99
        settings.min_duration_ms = int(seconds * 1000)
        settings.min_query_count = 1
        log = lg.LogSettings()
        log.log_output.outdir = str(outdir)
        log.log_output.copy_summary_to_stdout = False
        outdir.mkdir(parents=True, exist_ok=True)
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
        finally:
            finished.set()
            completer.join()
            os.write(group.request_fd, REQUEST.pack(STOP))
            instance.receive(group.timeout_s(slo_s))  # "done"
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
    summary = (outdir / "mlperf_log_summary.txt").read_text()
    p99 = re.search(r"99.00 percentile latency \(ns\)\s*:\s*(\d+)", summary)
    return {
        "rate_per_s": rate,
        "queries": len(ids),
        "valid": "Result is : VALID" in summary,
        "early_stopping": "Early stopping satisfied: Yes" in summary,
        "p99_s": int(p99.group(1)) / 1e9 if p99 else None,
    }


def compare(name: str, model: str, batch_size: int, shape: tuple[int, ...], seconds: float, root: Path) -> dict:
    scenario = Scenario(
        model=model,
        batch_size=batch_size,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load="eager",
        input_shape=shape,
        measure=MeasurePolicy(),
        timeout_s=600,
    )
    artifact = runtimes.prepare_artifact(scenario, root / "cache")
    usable = sorted(os.sched_getaffinity(0))
    # bench's 1x1 instance: the first usable core, one thread. LoadGen's threads (and this script's) run
    # on the others, as bench's generator does (they inherit this thread's affinity).
    group = InstanceGroup(scenario, artifact.path, [usable[:1]], root / name / "loadgen-instance", [batch_size])
    with group:
        os.sched_setaffinity(0, usable[1:] or usable)
        try:
            median_s, p99_s = single_call_s(group, batch_size)
            slo_ms = float(f"{max(SLO_FACTOR * median_s, SLO_TAIL_FACTOR * p99_s, SLO_FLOOR_S) * 1e3:.2g}")
            print(
                f"{name}: {model} b{batch_size}: single call median {median_s * 1e3:.2f} ms, p99 "
                f"{p99_s * 1e3:.2f} ms; SLO p99 <= {slo_ms:g} ms",
                flush=True,
            )
            return _compare(name, scenario, artifact.path, group, median_s, slo_ms, seconds, root)
        finally:
            os.sched_setaffinity(0, usable)


def _compare(
    name: str,
    scenario: Scenario,
    artifact_path: Path,
    group: InstanceGroup,
    median_s: float,
    slo_ms: float,
    seconds: float,
    root: Path,
) -> dict:
    policy = CapacityPolicy(slo_p99_ms=slo_ms, layouts=("1x1",), sweep=False)

    def bench_search(when: str):
        usable = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, range(os.cpu_count() or 1))  # bench pins its own instances and generator
        try:
            figures = measure_capacity(
                dataclasses.replace(scenario, capacity=policy),
                artifact_path,
                root / name / when,
                lambda _: None,
                lambda line: print(f"  bench ({when}) {line}", flush=True),
            )
        finally:
            os.sched_setaffinity(0, usable)
        server = figures.layouts[0].server
        rate = server.max_rate_per_s if server else None
        print(f"  bench ({when}): {rate and f'{rate:.4g}/s'} ({server.stop_reason if server else figures.note})")
        return rate, server, figures.note

    bench_rate, server, note = bench_search("before")
    runs = []
    if bench_rate:
        factors = list(FACTORS)
        for factor in factors:
            call_s, _ = single_call_s(group, scenario.batch_size)  # the host's speed just before this run
            run = loadgen_run(group, factor * bench_rate, slo_ms / 1e3, seconds, root / name / f"lg{factor}")
            run.update(factor=factor, single_call_median_s=call_s)
            runs.append(run)
            p99 = f"{run['p99_s'] * 1e3:.3g} ms" if run["p99_s"] else "-"
            print(
                f"  loadgen at {factor:.2f}x ({run['rate_per_s']:.4g}/s): p99 {p99}, "
                f"{'VALID' if run['valid'] else 'INVALID'} (single call before it: {call_s * 1e3:.2f} ms)",
                flush=True,
            )
            if factor == 0.85 and not run["valid"] and 0.7 not in factors:
                factors.insert(factors.index(0.85) + 1, 0.7)
    # bench again after LoadGen: a host whose speed drifted between the two tools' runs (this VM's did,
    # by 1.8x within 20 minutes at a load average under 1) makes any comparison a comparison of the host.
    bench_after, _, _ = bench_search("after") if bench_rate else (None, None, None)
    median_after_s, _ = single_call_s(group, scenario.batch_size)
    speeds = [median_s, *(r["single_call_median_s"] for r in runs), median_after_s]
    host_drift = max(speeds) / min(speeds) - 1
    rates = [r for r in (bench_rate, bench_after) if r]
    bench_spread = max(rates) / min(rates) - 1 if len(rates) == 2 else None
    steady = host_drift <= HOST_DRIFT_LIMIT and bench_spread is not None and bench_spread <= HOST_DRIFT_LIMIT
    print(
        f"  host: single-call medians {min(speeds) * 1e3:.2f} to {max(speeds) * 1e3:.2f} ms "
        f"(drift {host_drift:.0%}); "
        f"bench before/after {bench_rate and f'{bench_rate:.4g}'} / {bench_after and f'{bench_after:.4g}'}/s: "
        f"{'steady' if steady else 'NOT steady: the comparison measures the host'}",
        flush=True,
    )
    passing = [r["rate_per_s"] for r in runs if r["valid"]]
    failing = [r["rate_per_s"] for r in runs if not r["valid"]]
    highest_pass = max(passing, default=None)
    lowest_fail = min((f for f in failing if highest_pass is None or f > highest_pass), default=None)
    agrees = bool(
        bench_rate
        and any(r["valid"] for r in runs if r["factor"] == 0.85)
        and (highest_pass is None or bench_rate >= highest_pass / 1.15)
        and (lowest_fail is None or bench_rate <= lowest_fail * 1.15)
    )
    return {
        "name": name,
        "model": scenario.model,
        "batch_size": scenario.batch_size,
        "input_shape": list(scenario.input_shape),
        "single_call_median_s": median_s,
        "slo_p99_ms": slo_ms,
        "bench_max_rate_per_s": bench_rate,
        "bench_max_rate_after_per_s": bench_after,
        "bench_stop_reason": server.stop_reason if server else note,
        "host_single_call_drift": host_drift,
        "host_steady": steady,
        "bench_steps": [(s.rate_per_s, s.requests, s.over_slo, s.verdict, s.confirmation) for s in server.steps]
        if server
        else [],
        "loadgen_runs": runs,
        "loadgen_highest_pass_per_s": highest_pass,
        "loadgen_lowest_fail_per_s": lowest_fail,
        "agrees": agrees,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 30 s runs often left LoadGen's 99 % early stopping unsatisfied at 0.85x (INVALID with a p99 inside the SLO)
    parser.add_argument("--loadgen-seconds", type=float, default=120.0, help="each LoadGen run's min_duration")
    parser.add_argument("--out", type=Path, default=Path("loadgen_agreement.json"), help="figures as JSON")
    names = [name for name, *_ in MODELS]
    parser.add_argument("--models", nargs="+", choices=names, default=names, help="which models to compare")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as folder:
        results = [compare(*model, args.loadgen_seconds, Path(folder)) for model in MODELS if model[0] in args.models]
    cpuinfo = read_cpuinfo()  # the ISA too: a figure is only comparable on the CPU it names
    cpu = cpuinfo["cpu_model"]
    load = os.getloadavg()
    report = {
        "date": started,
        "cpu": cpu,
        "isa": cpuinfo["isa"],
        "cores": os.cpu_count(),
        "load_average_at_end": load,
        "models": results,
    }
    args.out.write_text(json.dumps(report, indent=2))
    for r in results:
        verdict = "agrees" if r["agrees"] else "does NOT agree"
        print(
            f"{r['name']}: bench {r['bench_max_rate_per_s']} (after: {r['bench_max_rate_after_per_s']}), LoadGen "
            f"pass <= {r['loadgen_highest_pass_per_s']}, fail >= {r['loadgen_lowest_fail_per_s']}: {verdict}"
            f"{'' if r['host_steady'] else ' (host NOT steady: inconclusive)'}"
        )
    print(f"{started}, {cpu}, {os.cpu_count()} cores, load average at the end {load[0]:.1f}; figures in {args.out}")


if __name__ == "__main__":
    main()
