"""Forked workers against fresh ones: the same scenarios, paired and interleaved, must measure the same.

For each scenario of --suite, --pairs pairs of rows: one from a worker forked by a zygote
(bench.measure.zygote), one from a fresh interpreter, in alternating order (fork first in even pairs),
with the artifacts cached beforehand. Per scenario it prints the median latency ratio fork /
fresh (geometric mean over pairs, with a 95 % bootstrap interval over pairs), torch's threads,
the worker's OS threads, the RSS baseline (before load), the per-phase VmHWM peaks and the
overhead per row (wall minus the timed steady state). Then, with --suite-runs, the whole suite
through `bench run --worker fork|fresh`, alternating, timed from outside.

    PYTHONPATH=. python benchmarks/worker_kinds.py [--suite scenarios/quickstart.yaml] [--pairs 3] [--suite-runs 1]

The medians are only as steady as the host: on a shared machine a ratio's interval is wide,
and a contended row (its `contention` verdict) is counted and named. This is why this is a
benchmark and not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import runtimes
from bench.measure.child import child_env
from bench.measure.runner import Silent, run_scenario, start_run
from bench.measure.zygote import ZygoteWorkers
from bench.results.record import ResultRecord
from bench.suite.scenarios import load_suite

MIB = 1024 * 1024
PHASES = ("load", "first_inference", "warmup", "steady")


def ratio_interval(ratios: list[float], rng: random.Random, resamples: int = 2000) -> tuple[float, float, float]:
    """Geometric mean of paired ratios and its 95 % bootstrap interval (resampling the pairs)."""
    logs = [math.log(r) for r in ratios]
    means = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(resamples))
    return (
        math.exp(statistics.fmean(logs)),
        math.exp(means[int(0.025 * resamples)]),
        math.exp(means[-int(0.025 * resamples) - 1]),
    )


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def paired(suite_path: Path, pairs: int, root: Path) -> None:
    suite = load_suite(suite_path)
    contexts = {kind: start_run(suite, root / kind, worker_kind=kind) for kind in ("fork", "fresh")}
    cache = root / "suite" / ".cache" / "artifacts"  # whole_suite's runs find them there too
    for context in contexts.values():  # one artifact cache for both kinds, filled before any timing
        context.cache_dir = cache
    for scenario in suite.scenarios:
        runtimes.prepare_artifact(scenario, cache)
    contexts["fork"].workers = ZygoteWorkers(child_env(1, {}), root / "zygote.log", print)
    rows: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    try:
        for pair in range(pairs):
            for scenario in suite.scenarios:
                order = ("fork", "fresh") if pair % 2 == 0 else ("fresh", "fork")
                for kind in order:
                    row = run_scenario(contexts[kind], scenario, Silent(), file_stem=f"{scenario.id}-{pair}")
                    rows[(scenario.id, kind)].append(row)
                print(f"pair {pair + 1}/{pairs} {scenario.id}: done", file=sys.stderr, flush=True)
    finally:
        contexts["fork"].workers.close()
    rng = random.Random(0)
    print(f"\n{pairs} pairs per scenario, interleaved; load average now {os.getloadavg()[0]:.1f}")
    for scenario in suite.scenarios:
        fork, fresh = rows[(scenario.id, "fork")], rows[(scenario.id, "fresh")]
        ok = [(a, b) for a, b in zip(fork, fresh, strict=True) if a.status == b.status == "ok"]
        print(
            f"\n{scenario.id}  ({len(ok)} ok pairs; contended rows fork {sum(r.contended for r in fork)}, "
            f"fresh {sum(r.contended for r in fresh)})"
        )
        if not ok:
            print("  no pair where both rows are ok: " + "; ".join(r.reason or "" for r in fork + fresh if r.reason))
            continue
        mean, low, high = ratio_interval([a.latency_s.median / b.latency_s.median for a, b in ok], rng)
        medians_ms = {
            kind: [round(r.latency_s.median * 1e3, 3) for r in kind_rows]
            for kind, kind_rows in (("fork", [a for a, _ in ok]), ("fresh", [b for _, b in ok]))
        }
        print(f"  median latency fork/fresh: {mean:.3f} (95% {low:.3f} .. {high:.3f}); medians ms {medians_ms}")
        for kind, kind_rows in (("fork", [a for a, _ in ok]), ("fresh", [b for _, b in ok])):
            print(f"  {kind:5}: {_facts(kind_rows)}")
    for kind in ("fork", "fresh"):
        timelines = [r.timeline for (_, k), rs in rows.items() if k == kind for r in rs if r.timeline]
        wall = sum(t.wall_s for t in timelines)
        steady = sum(t.steady_s or 0 for t in timelines)
        median = statistics.median(t.overhead_s for t in timelines)
        print(
            f"\n{kind}: {len(timelines)} rows, measured {steady:.1f} s of {wall:.1f} s wall, overhead "
            f"{(wall - steady) / len(timelines):.2f} s per row (median {median:.2f} s)"
        )


def _facts(rows: list[ResultRecord]) -> str:
    """Threads, memory and overhead of one kind's rows of a scenario."""
    last = rows[-1]
    peaks = {p: statistics.median(getattr(r.peak_rss_kernel_phase_bytes, p) or 0 for r in rows) for p in PHASES}
    overhead = statistics.median(r.timeline.overhead_s for r in rows)
    start = statistics.median((r.timeline.process_start_s or 0) + (r.timeline.imports_s or 0) for r in rows)
    threads = sorted({r.torch_num_threads for r in rows})
    interop = sorted({r.torch_num_interop_threads for r in rows})
    os_threads = sorted({r.worker_os_threads for r in rows})
    rss = last.rss_bytes
    return (
        f"torch threads {threads}, interop {interop}, OS threads {os_threads}; RSS before load "
        f"{_mib(rss.before_load)} MiB, load adds {_mib(rss.after_load - rss.before_load)} MiB, peak USS "
        f"{_mib(rss.peak_uss)} MiB; VmHWM MiB "
        + " ".join(f"{p} {_mib(int(v))}" for p, v in peaks.items())
        + f"; overhead {overhead:.2f} s (start+imports {start:.2f} s)"
    )


def whole_suite(suite_path: Path, runs: int, root: Path) -> None:
    """`bench run` of the suite with each kind, alternating, wall time from outside. The artifacts are cached
    by `paired` (with --pairs 0 the first run prepares them: its wall time is not a warm cache's)."""
    walls: dict[str, list[float]] = defaultdict(list)
    kinds = [kind for r in range(runs) for kind in (("fork", "fresh") if r % 2 == 0 else ("fresh", "fork"))]
    for kind in kinds:
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "run",
                str(suite_path),
                "--reports",
                str(root / "suite"),
                "--no-history",
                "--worker",
                kind,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        walls[kind].append(time.perf_counter() - started)
        line = next((x for x in done.stdout.splitlines() if x.startswith("measured ")), "(no measured line)")
        print(f"bench run --worker {kind}: exit {done.returncode}, {walls[kind][-1]:.1f} s; {line}", flush=True)
    for kind, values in walls.items():
        print(f"{kind}: median {statistics.median(values):.1f} s over {len(values)} run(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path("scenarios/quickstart.yaml"))
    parser.add_argument("--pairs", type=int, default=3, help="pairs of rows per scenario")
    parser.add_argument("--suite-runs", type=int, default=1, help="whole-suite runs per kind (0: none)")
    args = parser.parse_args()
    print(
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        f"load average {os.getloadavg()[0]:.1f}",
        f"cores {len(os.sched_getaffinity(0))}",
    )
    with tempfile.TemporaryDirectory(prefix="bench-worker-kinds-") as folder:
        root = Path(folder)
        if args.pairs:
            paired(args.suite, args.pairs, root)
        if args.suite_runs:
            print()
            whole_suite(args.suite, args.suite_runs, root)


if __name__ == "__main__":
    main()
