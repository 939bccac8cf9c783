"""Does bench's max rate at a p99 SLO agree with MLPerf LoadGen's Server scenario on the same model?

Needs LoadGen's Python bindings, which this script does not install:

    python -m pip install mlcommons-loadgen==6.0.17      # or: pip install '.[loadgen]'

For each model: bench measures layout 1x1 (one instance pinned to one core, one thread) with
capacity's default settings at the SLO (bench.capacity, in this process). Then LoadGen's
Server scenario (PerformanceOnly) drives the same model, at one thread, in a worker thread
of this process pinned to the core bench's instance had, at rates around bench's answer
(0.85x, 1x, 1.15x, 1.3x, and 0.7x when 0.85x fails), each for --loadgen-seconds. A LoadGen
run passes when its result is VALID: p99 within the target latency, and LoadGen's early
stopping (99 % confidence) satisfied.

Agreement (the issue's criterion): bench's rate lies between LoadGen's highest passing and
lowest failing rate within +-15 %, and LoadGen passes at 0.85x bench's rate.

    PYTHONPATH=. python benchmarks/loadgen_agreement.py [--out loadgen_agreement.json]

Both sides run on the same host at different times: on a shared host the figures move with
its load, and the report says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import re
import tempfile
import threading
import time
from pathlib import Path

import mlperf_loadgen as lg
import torch

from bench import backends
from bench.capacity import measure_capacity
from bench.suite import CapacityPolicy, MeasurePolicy, Scenario

# name, model, batch size, input shape: a fast (~1 ms) and a slower (~10 ms) model on one core
MODELS = [
    ("fast", "tiny_mlp", 256, (64,)),
    ("slow", "mobilenet_v3_small", 1, (3, 112, 112)),
]
# The SLO: 5 x the median single call, and at least 2 x the 99th percentile of 200 single calls
# (on a busy host the tail is long, and an SLO below the single-stream p99 cannot be met).
SLO_FACTOR, SLO_TAIL_FACTOR = 5, 2
FACTORS = (0.85, 1.0, 1.15, 1.3)


def single_call_s(infer, batch) -> tuple[float, float]:
    """The median and 99th percentile (nearest rank) of 200 single calls."""
    times = []
    for _ in range(200):
        started = time.perf_counter()
        infer(batch)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[100], times[197]


def loadgen_run(infer, batch, rate: float, slo_s: float, seconds: float, outdir: Path) -> dict:
    """One LoadGen Server run at `rate`; its summary's verdict and p99."""
    work: queue.Queue = queue.Queue()

    def serve() -> None:
        # On the core bench's 1x1 instance had (the first usable one); LoadGen's own threads run unpinned.
        os.sched_setaffinity(threading.get_native_id(), sorted(os.sched_getaffinity(0))[:1])
        torch.set_num_threads(1)
        with torch.inference_mode():
            while (item := work.get()) is not None:
                infer(batch)
                lg.QuerySamplesComplete([lg.QuerySampleResponse(item, 0, 0)])

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    sut = lg.ConstructSUT(lambda samples: [work.put(s.id) for s in samples], lambda: None)
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
        work.put(None)
        worker.join()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    summary = (outdir / "mlperf_log_summary.txt").read_text()
    p99 = re.search(r"99.00 percentile latency \(ns\)\s*:\s*(\d+)", summary)
    return {
        "rate_per_s": rate,
        "valid": "Result is : VALID" in summary,
        "early_stopping": "Early stopping satisfied: Yes" in summary,
        "p99_s": int(p99.group(1)) / 1e9 if p99 else None,
    }


def compare(name: str, model: str, batch_size: int, shape: tuple[int, ...], seconds: float, root: Path) -> dict:
    scenario = Scenario(
        model=model, batch_size=batch_size, threads=1, interop_threads=1, precision="fp32", load="eager",
        input_shape=shape, measure=MeasurePolicy(), timeout_s=600,
    )  # fmt: skip
    artifact = backends.prepare_artifact(scenario, root / "cache")
    torch.set_num_threads(1)
    with torch.inference_mode():
        infer, _ = backends.load_model(scenario, artifact.path)
        batch = backends.make_batch(scenario)
        median_s, p99_s = single_call_s(infer, batch)
    slo_ms = float(f"{max(SLO_FACTOR * median_s, SLO_TAIL_FACTOR * p99_s) * 1e3:.2g}")
    print(f"{name}: {model} b{batch_size}: single call median {median_s * 1e3:.2f} ms, p99 {p99_s * 1e3:.2f} ms; "
          f"SLO p99 <= {slo_ms:g} ms", flush=True)  # fmt: skip
    policy = CapacityPolicy(slo_p99_ms=slo_ms, layouts=("1x1",), sweep=False)
    figures = measure_capacity(
        dataclasses.replace(scenario, capacity=policy), artifact.path, root / name, lambda _: None,
        lambda line: print(f"  bench {line}", flush=True),
    )  # fmt: skip
    server = figures.layouts[0].server
    bench_rate = server.max_rate_per_s if server else None
    print(f"  bench: {bench_rate and f'{bench_rate:.4g}/s'} ({server.stop_reason if server else figures.note})")
    runs = []
    if bench_rate:
        factors = list(FACTORS)
        with torch.inference_mode():
            for factor in factors:
                run = loadgen_run(infer, batch, factor * bench_rate, slo_ms / 1e3, seconds, root / name / f"lg{factor}")
                run["factor"] = factor
                runs.append(run)
                p99 = f"{run['p99_s'] * 1e3:.3g} ms" if run["p99_s"] else "-"
                print(f"  loadgen at {factor:.2f}x ({run['rate_per_s']:.4g}/s): p99 {p99}, "
                      f"{'VALID' if run['valid'] else 'INVALID'}", flush=True)  # fmt: skip
                if factor == 0.85 and not run["valid"] and 0.7 not in factors:
                    factors.insert(factors.index(0.85) + 1, 0.7)
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
        "name": name, "model": model, "batch_size": batch_size, "input_shape": list(shape),
        "single_call_median_s": median_s, "single_call_p99_s": p99_s, "slo_p99_ms": slo_ms,
        "bench_max_rate_per_s": bench_rate,
        "bench_stop_reason": server.stop_reason if server else figures.note,
        "bench_steps": [(s.rate_per_s, s.requests, s.over_slo, s.verdict, s.confirmation) for s in server.steps]
        if server else [],
        "loadgen_runs": runs, "loadgen_highest_pass_per_s": highest_pass, "loadgen_lowest_fail_per_s": lowest_fail,
        "agrees": agrees,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loadgen-seconds", type=float, default=30.0, help="each LoadGen run's min_duration")
    parser.add_argument("--out", type=Path, default=Path("loadgen_agreement.json"), help="figures as JSON")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as folder:
        results = [compare(*model, args.loadgen_seconds, Path(folder)) for model in MODELS]
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    load = os.getloadavg()
    report = {"date": started, "cpu": cpu, "cores": os.cpu_count(), "load_average_at_end": load, "models": results}
    args.out.write_text(json.dumps(report, indent=2))
    for r in results:
        print(f"{r['name']}: bench {r['bench_max_rate_per_s']}, LoadGen pass <= {r['loadgen_highest_pass_per_s']}, "
              f"fail >= {r['loadgen_lowest_fail_per_s']}: {'agrees' if r['agrees'] else 'does NOT agree'}")  # fmt: skip
    print(f"{started}, {cpu}, {os.cpu_count()} cores, load average at the end {load[0]:.1f}; figures in {args.out}")


if __name__ == "__main__":
    main()
