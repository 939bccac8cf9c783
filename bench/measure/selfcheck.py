"""`bench selfcheck`: the tool measuring itself.

(a) Harness accuracy: the harness's median against torch.utils.benchmark.Timer's median
    on the same model and input, in alternating blocks inside one worker process.
(b) Sampler accuracy: the parent's sampled peak RSS against the kernel's high-water mark.
(c) Sampler cost: latency of rounds while the sampler runs against rounds while it
    sleeps (the sampler is toggled on and off in a fixed rhythm during (a)).
(d) Run-to-run noise: the coefficient of variation of the median over new worker processes,
    forked or fresh as `bench run` starts them.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import runtimes
from bench.console import ConsoleProgress
from bench.errors import UserError
from bench.measure.memory import cpu_count
from bench.measure.runner import (
    DEFAULT_WORKER_KIND,
    RunContext,
    WorkerOutcome,
    close_workers,
    run_scenario,
    run_worker,
    start_run,
)
from bench.measure.worker import WorkerFacts
from bench.models import catalog as models
from bench.results.record import ResultRecord, append_record
from bench.results.runfolder import benchmark_round_times
from bench.results.stats import coefficient_of_variation
from bench.suite.scenarios import MeasurePolicy, Scenario, Suite

# Many short blocks rather than a few long ones: on a shared host the latency drifts over
# seconds, and only fine alternation lets both timers see the same drift.
INTERLEAVED_BLOCKS = 16
SAMPLER_TOGGLE_S = 0.25
KERNEL_COUNTER_SLACK_BYTES = 1 << 20
SELFCHECK_RSS_INTERVAL_S = 0.01
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    low: float | None
    high: float | None
    detail: str
    ci: tuple[float, float] | None = None  # bootstrap 95% interval of `value`, where it has one

    @property
    def verdict(self) -> str:
        """pass / fail / inconclusive (outside the target, but the interval still reaches it) / info."""
        if self.value is None:
            return "fail"
        if self.low is None and self.high is None:
            return "info"
        if self._within(self.value):
            return "pass"
        if self.ci is not None and (self._within(self.ci[0]) or self._within(self.ci[1]) or self._straddles()):
            return "inconclusive"
        return "fail"

    def _within(self, x: float) -> bool:
        return (self.low is None or x >= self.low) and (self.high is None or x <= self.high)

    def _straddles(self) -> bool:
        assert self.ci is not None
        return self.ci[0] <= (self.low if self.low is not None else self.high) <= self.ci[1]


def bootstrap_ci(
    statistic: Callable[[np.random.Generator], float], resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of `statistic` over seeded bootstrap resamples."""
    rng = np.random.default_rng(0)
    values = sorted(statistic(rng) for _ in range(resamples))
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


def _resampled_median(rng: np.random.Generator, values: np.ndarray) -> float:
    # numpy, not random.choices: the sampler check resamples ~100k rounds 2,000 times.
    return float(np.median(values[rng.integers(0, values.size, values.size)]))


@dataclass(frozen=True)
class SelfcheckResult:
    run_dir: Path
    scenario_id: str
    checks: list[Check]
    contended: list[str] = field(default_factory=list)  # the measurements taken on a contended host, and why

    @property
    def passed(self) -> bool:
        """No check clearly failed (an inconclusive one does not fail the run), on a host that was quiet."""
        return not self.contended and all(c.verdict != "fail" for c in self.checks)


def run_selfcheck(
    *,
    model: str = "resnet18",
    threads: int | None = None,
    batch_size: int = 1,
    runs: int = 3,
    block_time_s: float = 0.5,
    reports_dir: Path = Path("reports"),
    scenario: Scenario | None = None,
    worker_kind: str = DEFAULT_WORKER_KIND,
) -> SelfcheckResult:
    """`scenario`: a suite's scenario to check on (e.g. a text model) instead of `model`; its
    threads and batch size are used unless `threads` is given."""
    if scenario is None and not models.is_known(model):
        raise UserError(f"--model: unknown model '{model}'; see 'bench models'")
    if runs < 2:
        raise UserError(f"--runs: at least 2 worker processes are needed for a coefficient of variation, got {runs}")
    policy = MeasurePolicy(warmup_rounds=10, min_rounds=10, max_time_s=block_time_s)
    if scenario is not None:
        scenario = dataclasses.replace(
            scenario,
            threads=threads or scenario.threads,
            measure=policy,
            host_group=None,
            profile=False,
            capacity=None,
            data=None,
            generate=None,
        )
    else:
        scenario = Scenario(
            model=model,
            batch_size=batch_size,
            threads=threads or cpu_count(),
            interop_threads=1,
            precision="fp32",
            load="eager",
            input_shape=models.default_input_shape(model),
            measure=policy,
        )
    suite = Suite(Path("<selfcheck>"), "selfcheck", "bench selfcheck", (scenario,), "# generated by bench selfcheck\n")
    context = start_run(suite, reports_dir, worker_kind=worker_kind, start_workers=True)
    try:
        checks, records, outcome = _measure(context, scenario, runs)
    finally:
        close_workers(context)
    checks.append(_sampler_accuracy(records))
    checks.append(_run_to_run(records))
    contended = [
        f"interleaved block {b.block}: {b.contention.why}"
        for b in outcome.worker.selfcheck_blocks
        if b.contention is not None and b.contention.verdict == "contended"
    ] + [f"{context.worker_kind} worker {n}: {r.contention.why}" for n, r in enumerate(records, start=1) if r.contended]
    result = SelfcheckResult(context.run_dir, scenario.id, checks, contended)
    (context.run_dir / "selfcheck.json").write_text(
        json.dumps(
            {
                "scenario_id": scenario.id,
                "passed": result.passed,
                "contended": contended,
                "checks": [{**asdict(c), "verdict": c.verdict} for c in checks],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return result


def _measure(
    context: RunContext, scenario: Scenario, runs: int
) -> tuple[list[Check], list[ResultRecord], WorkerOutcome]:
    """The interleaved blocks in one worker, then `runs` rows, each in its own worker (the run's kind)."""
    progress = ConsoleProgress()

    progress.scenario_started(1, runs + 1, f"{scenario.id}: {INTERLEAVED_BLOCKS} blocks, harness and Timer interleaved")
    artifact = runtimes.prepare_artifact(scenario, context.cache_dir)
    out_dir = context.run_dir / "selfcheck"
    benchmark_json = out_dir / "interleaved-benchmark.json"
    outcome = run_worker(
        scenario,
        artifact.path,
        out_dir,
        benchmark_json,
        rss_interval_s=SELFCHECK_RSS_INTERVAL_S,
        rss_steady_interval_s=scenario.measure.rss_steady_interval_s,
        test="test_selfcheck_block",
        extra_env={"BENCH_SELFCHECK_BLOCKS": str(INTERLEAVED_BLOCKS)},
        sampler_toggle_period_s=SAMPLER_TOGGLE_S,
        progress=progress,
        workers=context.workers,
    )
    print(file=sys.stderr)
    if outcome.returncode != 0 or outcome.worker.status != "ok":
        raise RuntimeError(
            f"the selfcheck worker failed: {outcome.worker.reason or outcome.stderr_tail} (details in {out_dir})"
        )
    checks = [_harness_vs_timer(benchmark_json, outcome.worker), _sampler_cost(benchmark_json, outcome)]

    records: list[ResultRecord] = []
    for run in range(1, runs + 1):
        progress.scenario_started(run + 1, runs + 1, f"{scenario.id}: {context.worker_kind} worker {run} of {runs}")
        record = run_scenario(context, scenario, progress, file_stem=f"{scenario.id}-run{run}")
        append_record(context.results_path, record)
        progress.scenario_finished(record)
        if record.status != "ok":
            raise RuntimeError(f"the selfcheck scenario failed: {record.reason}")
        records.append(record)
    return checks, records, outcome


def _harness_vs_timer(benchmark_json: Path, worker: WorkerFacts) -> Check:
    data = json.loads(benchmark_json.read_text(encoding="utf-8"))
    harness_medians = [statistics.median(b["stats"]["data"]) for b in data["benchmarks"]]
    timer_medians = [b.timer_median_s for b in worker.selfcheck_blocks]
    # Each block's pair was measured back to back: their ratio cancels the host's slow drift.
    ratios = sorted(h / t for h, t in zip(harness_medians, timer_medians, strict=True))
    return Check(
        "harness median / torch Timer median",
        statistics.median(ratios),
        0.97,
        1.03,
        ci=bootstrap_ci(lambda rng: _resampled_median(rng, np.asarray(ratios))),
        detail=f"median of {len(ratios)} back-to-back block ratios (middle half {ratios[len(ratios) // 4]:.3f}.."
        f"{ratios[(3 * len(ratios)) // 4]:.3f}); harness {statistics.median(harness_medians) * 1e3:.3f} ms, "
        f"Timer {statistics.median(timer_medians) * 1e3:.3f} ms",
    )


def _sampler_cost(benchmark_json: Path, outcome) -> Check:
    times_s = benchmark_round_times(benchmark_json)
    starts_s = [t for b in outcome.worker.selfcheck_blocks for t in b.round_starts_s]
    on, off = [], []
    for start_s, time_s in zip(starts_s, times_s, strict=True):
        sampled = any(lo <= start_s < hi for lo, hi in outcome.on_windows)
        (on if sampled else off).append(time_s)
    if len(on) < 10 or len(off) < 10:
        return Check("sampler overhead on median latency", None, None, 0.01, "too few rounds in on/off windows")
    overhead = statistics.median(on) / statistics.median(off) - 1
    on_rounds, off_rounds = np.asarray(on), np.asarray(off)
    return Check(
        "sampler overhead on median latency",
        overhead,
        None,
        0.01,
        ci=bootstrap_ci(lambda rng: _resampled_median(rng, on_rounds) / _resampled_median(rng, off_rounds) - 1),
        detail=f"{len(on)} rounds sampled (every {MeasurePolicy().rss_steady_interval_s * 1e3:g} ms, the "
        f"timed-phase rate) vs {len(off)} unsampled "
        f"(sampler toggled every {SAMPLER_TOGGLE_S} s); the sampler thread itself used "
        f"{outcome.sampler_cpu_s * 1e3:.0f} ms of CPU for {len(outcome.samples)} samples "
        f"({outcome.sampler_cpu_s / max(len(outcome.samples), 1) * 1e6:.0f} us each, "
        f"{outcome.sampler_cpu_s / (len(outcome.on_windows) * SAMPLER_TOGGLE_S) * 100:.2f} % of one core while on)",
    )


def _sampler_accuracy(records: list[ResultRecord]) -> Check:
    ratios = [
        r.rss_bytes.peak / r.peak_rss_kernel_bytes for r in records if r.rss_bytes.peak and r.peak_rss_kernel_bytes
    ]
    if not ratios:
        return Check("sampled peak RSS / kernel VmHWM", None, 0.95, 1.0, "no kernel high-water mark was readable")
    kernel_peak = min(r.peak_rss_kernel_bytes for r in records if r.peak_rss_kernel_bytes)
    # The kernel keeps RSS in per-CPU counters that are summed lazily, so two readings of the
    # same memory can differ by a few hundred KiB: a ratio within that slack of 1 is equality.
    high = 1.0 + KERNEL_COUNTER_SLACK_BYTES / kernel_peak
    # The sampler can only miss a peak (ratio < 1); clearly above 1 would mean a broken reading.
    worst = max(ratios) if max(ratios) > 1.0 else min(ratios)
    return Check(
        "sampled peak RSS / kernel VmHWM",
        worst,
        0.95,
        high,
        "per run: " + ", ".join(f"{x:.4f}" for x in ratios) + " (the value shown is the worst run; "
        f"above 1 by up to {KERNEL_COUNTER_SLACK_BYTES >> 10} KiB is the kernel counters' own imprecision)",
    )


def _run_to_run(records: list[ResultRecord]) -> Check:
    medians = [r.latency_s.median for r in records if r.latency_s]
    return Check(
        "run-to-run CV of the median",
        coefficient_of_variation(medians),
        None,
        None,
        f"{len(medians)} worker processes ({_kinds(records)}): " + ", ".join(f"{m * 1e3:.3f} ms" for m in medians),
    )


def _kinds(records: list[ResultRecord]) -> str:
    """'forked' or 'fresh interpreters' (both, if the zygote died mid-check)."""
    names = {"fork": "forked", "fresh": "fresh interpreters"}
    return " and ".join(names.get(k, k) for k in sorted({r.worker_kind or "fresh" for r in records}))


def print_selfcheck(result: SelfcheckResult) -> None:
    print(f"selfcheck of {result.scenario_id} (details in {result.run_dir})")
    for check in result.checks:
        value = "n/a" if check.value is None else _format(check, check.value)
        interval = f"  (95% CI {_format(check, check.ci[0])}..{_format(check, check.ci[1])})" if check.ci else ""
        label = "no verdict" if result.contended else check.verdict
        print(f"  {label.upper():12}  {check.name:38} {value:>10}   {_target_text(check)}{interval}")
        print(f"                {check.detail}")
    verdicts = {c.verdict for c in result.checks}
    if result.contended:
        print(
            f"NO VERDICT: the host was contended during {len(result.contended)} measurement(s), so these figures say "
            "more about the other processes than about bench; rerun on a quiet host:"
        )
        for line in result.contended:
            print(f"  {line}")
    elif "fail" in verdicts:
        print("some checks FAILED")
    elif "inconclusive" in verdicts:
        print(
            "no check failed, but some are inconclusive: the machine was too noisy to tell; "
            "rerun when it is quiet, or with a longer --block-time"
        )
    else:
        print("all checks passed")


def _format(check: Check, value: float) -> str:
    percent = "overhead" in check.name or "CV" in check.name
    return f"{value * 100:+.2f} %" if percent else f"{value:.4f}"


def _target_text(check: Check) -> str:
    if check.low is not None and check.high is not None:
        return f"target {_format(check, check.low)}..{_format(check, check.high)}"
    if check.high is not None:
        return f"target <= {_format(check, check.high)}"
    return "no target"
