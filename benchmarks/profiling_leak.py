"""Does `profile: true` change a row's timed figures? Plain, profiled, plain suite runs, compared.

Suite runs (bench.measure.runner, as `bench run` makes them) of one tiny_mlp scenario: plain, profiled,
plain, so the profiled run is bracketed and slow drift of the host hits both sides. Noise is the
spread of the two plain medians, |ln(A1/A2)|; the profiled run's timed median must lie within
max(3 x noise, ln 1.5) of their geometric mean. A leak is wider: timing under the profiler would
multiply the median by the profiler's overhead, which the profile measures in its own process
(~2x for tiny_mlp). An attempt counts only when the bound is below that (decisive). After an
attempt beyond the bound or too noisy to tell, another (profiled, plain) pair follows, up to
--attempts: the first decisive attempt within the bound says "no leak"; two decisive attempts
beyond it say "leak"; otherwise "too noisy to tell here".

The structural guarantee (each profile starts after its timed worker's last event, in another
process) is a test: tests/test_profiling.py. This statistical check needs a quiet host and takes
minutes, so it is a benchmark.

    PYTHONPATH=. python benchmarks/profiling_leak.py [--attempts 5]

With a profiler injected into the timed worker, a first attempt gave 26.5 / 27.5 us plain and
51.4 us profiled: beyond the bound, as a leak must be.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

from bench.measure.runner import run_suite, start_run
from bench.suite.scenarios import parse_suite

MEASURE = "measure: {warmup_rounds: 20, min_rounds: 200, max_time_s: 0.5}"
PLAIN = parse_suite(f"name: plain\ndefaults: {{{MEASURE}}}\nmatrix: {{model: [tiny_mlp]}}\n")
PROFILED = parse_suite(f"name: profiled\ndefaults: {{{MEASURE}, profile: true}}\nmatrix: {{model: [tiny_mlp]}}\n")


def one_row(suite, root: Path):
    (record,) = run_suite(start_run(suite, root))
    if record.status != "ok":
        sys.exit(f"{suite.name} row {record.status}: {record.reason}")
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=5, help="(profiled, plain) pairs at most")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-leak-") as folder:
        root = Path(folder)
        before = one_row(PLAIN, root)
        beyond = 0
        for attempt in range(1, args.attempts + 1):
            profiled, after = one_row(PROFILED, root), one_row(PLAIN, root)
            a1, a2, b = before.latency_s.median, after.latency_s.median, profiled.latency_s.median
            bound = max(3 * abs(math.log(a1 / a2)), math.log(1.5))
            shift = abs(math.log(b / math.sqrt(a1 * a2)))
            leak = math.log(profiled.profile.profiler_overhead)  # what timing under the profiler would add
            print(
                f"attempt {attempt}: plain {a1 * 1e6:.1f} / {a2 * 1e6:.1f} us, profiled {b * 1e6:.1f} us: "
                f"shift {shift:.1%} (log), bound {bound:.1%}; a leak would shift {leak:.1%} "
                f"(profiler overhead {profiled.profile.profiler_overhead:.2f}x)",
                flush=True,
            )
            if bound < leak:
                if shift <= bound:
                    print(f"no leak: the profiled median is within noise (load average {os.getloadavg()[0]:.1f})")
                    return 0
                beyond += 1
                if beyond == 2:
                    print("LEAK: two decisive attempts put the profiled median beyond noise")
                    return 1
            before = after
    print("too noisy to tell a leak from noise here")
    return 2


if __name__ == "__main__":
    sys.exit(main())
