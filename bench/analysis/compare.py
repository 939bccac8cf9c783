"""Noise-aware comparison of two runs: `bench compare BASELINE CANDIDATE`.

Scenarios are matched by id. For each metric the relative change (candidate / baseline - 1)
gets a verdict:

- latency (median, p99) and throughput: a 95 % confidence interval for the change from a
  seeded block bootstrap of the raw round times of both runs (rounds are resampled in
  contiguous blocks of about sqrt(n) rounds, so a burst of interference that slowed a
  stretch of consecutive rounds widens the interval instead of hiding in it). `regressed`
  (or `improved`) when the change is at least the threshold (default 5 %) in the bad (good)
  direction, the interval excludes zero, *and* the change is larger than the statistic's
  drift within either run (see `drift`: a machine that switched between a quiet and a busy
  state during a run moves the median by itself; no change smaller than that is trusted).
  `unchanged` when the whole interval lies within +-threshold and neither run drifted that
  much; otherwise `inconclusive` (the data cannot tell).
- load time and peak RSS are one number per run: no interval can be computed. Peak RSS
  (the kernel's VmHWM when both runs have it, else the sampled peak) is nearly
  deterministic, so it is judged by its own threshold alone (default 10 %). Load time is
  one event of a few milliseconds for a small model, and was seen to halve between two
  identical runs on a busy 2-core machine: it is flagged only past its own threshold
  (default 100 %, a doubling) and 25 ms; a change between the latency threshold and that is
  `inconclusive`.
- a scenario that was ok and now fails (or is unsupported) is `regressed`; the reverse is
  `improved`.
- a row whose `contention` verdict is `contended` (bench.checks.contention) in either run makes its
  time figures `inconclusive`: other processes took the CPU while it was timed.
- rows measured with different worker kinds (fork, fresh) have `inconclusive` memory figures:
  a forked worker shares the zygote's pages, so its RSS starts from another baseline.

Runs are comparable only when their environments agree on what matters (the fingerprint's
keys: CPU model and instruction sets, core counts, kernel, Python and library versions;
plus the allocator and the OpenMP/MKL variables) and every matched scenario ran with the
same thread settings. When either run is a fleet run, its environment.json is the client's,
which measured nothing: then each matched row's own environment fingerprint is compared with the
other side's row, explained from the hosts' environments/<fingerprint>.json. Otherwise the
comparison is refused, naming the differences, unless allow_env_mismatch is set; then every row
carries a warning.

Both sides holding the same measurements (one run given twice, or a copy of it under another
run id: equal round times and latency figures in every matched scenario) is compared, with a
first warning saying so: every change is then 0 and no verdict says anything.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.errors import UserError
from bench.format.markdown import cell, table
from bench.format.text import format_table
from bench.results.metrics import METRICS, Metric
from bench.results.record import ResultRecord
from bench.results.runfolder import RunFolder, ScenarioResult
from bench.results.stats import bootstrap_statistics, drift, point_statistics

VERDICTS = ("regressed", "improved", "unchanged", "inconclusive")
COMPARED = ("median", "p99", "throughput", "load", "peak_rss")
MIN_ROUNDS_FOR_CI = 10  # below this a bootstrap interval is too narrow to trust
# What two environments must share to be compared (the keys bench.environment fingerprints).
FINGERPRINT_KEYS = ("cpu_model", "isa", "logical_cores", "usable_cores", "kernel", "python", "libraries")
# Set by the worker from the scenario itself, so they may differ in the parent's environment.
_PER_SCENARIO_VARS = {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}
_THREAD_VAR_PREFIXES = ("OMP_", "KMP_", "MKL_", "GOMP_", "OPENBLAS_", "MALLOC_")
_THREAD_FIELDS = ("threads", "interop_threads", "torch_num_threads", "torch_num_interop_threads")


class IncomparableError(UserError):
    """The two runs measured different things (environment or thread settings)."""


@dataclass(frozen=True)
class Rule:
    """How changes are judged. Thresholds are fractions (0.05 = 5 %)."""

    threshold: float = 0.05  # latency and throughput
    memory_threshold: float = 0.10
    load_threshold: float = 1.00  # one event per run: only a doubling (or halving) is flagged
    load_min_s: float = 0.025
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("threshold", "memory_threshold", "load_threshold"):
            value = getattr(self, name)
            if not (0 < value < 10):
                raise UserError(f"{name.replace('_', '-')} must be a percentage > 0, got {value * 100:g}")
        if not 0.5 <= self.confidence < 1:
            raise UserError(f"confidence must be between 50 and 100 percent, got {self.confidence * 100:g}")
        if self.resamples < 100:
            raise UserError(f"resamples must be at least 100, got {self.resamples}")
        if self.load_min_s < 0:
            raise UserError("load-min-ms must not be negative")

    def describe(self) -> str:
        return (
            f"latency and throughput: flagged when the change is >= {self.threshold:.0%}, the "
            f"{self.confidence:.0%} confidence interval (block bootstrap of the raw rounds, {self.resamples} "
            f"resamples, seed {self.seed}) excludes 0, and the change exceeds the drift within either run; "
            f"unchanged when the interval lies within +-{self.threshold:.0%} and neither run drifted that much; "
            f"else inconclusive. Peak RSS: one value per run, flagged at >= {self.memory_threshold:.0%}. "
            f"Load time: one value per run, flagged at >= {self.load_threshold:.0%} and "
            f">= {self.load_min_s * 1e3:g} ms, inconclusive from {self.threshold:.0%}"
        )


@dataclass
class Row:
    scenario_id: str
    metric: str  # a METRICS name, or "status"
    title: str
    unit: str
    baseline: float | str | None
    candidate: float | str | None
    change: float | None = None  # relative: candidate / baseline - 1
    ci: tuple[float, float] | None = None  # of the change
    verdict: str = "unchanged"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id,
            "metric": self.metric,
            "title": self.title,
            "unit": self.unit,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "change": self.change,
            "ci_low": self.ci[0] if self.ci else None,
            "ci_high": self.ci[1] if self.ci else None,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass
class Comparison:
    baseline: RunFolder
    candidate: RunFolder
    rule: Rule
    rows: list[Row]
    environment_differences: list[str] = field(default_factory=list)
    thread_differences: list[str] = field(default_factory=list)
    baseline_only: list[str] = field(default_factory=list)
    candidate_only: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def scenarios(self) -> int:
        return len({r.scenario_id for r in self.rows})

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)

    @property
    def regressed(self) -> bool:
        return self.count("regressed") > 0

    @property
    def comparable(self) -> bool:
        return not self.environment_differences and not self.thread_differences

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(v)} {v}" for v in VERDICTS)
        return f"{counts} ({self.scenarios} scenarios compared)"


# --- statistics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    change: float  # relative change, candidate vs baseline
    ci: tuple[float, float]  # its confidence interval
    drift: float | None = None  # how far the statistic wandered within a run, beyond chance (the larger run)
    drift_side: str | None = None  # "baseline" or "candidate": where it wandered most


_DRIFT_JUDGED_BY = {"median": ("median",), "throughput": ("mean", "median"), "p99": ("p99", "median", "mean")}


def bootstrap_changes(
    baseline: Sequence[float], candidate: Sequence[float], rule: Rule, key: str
) -> dict[str, Estimate]:
    """Relative change, its confidence interval and the runs' drift for median, p99 and
    throughput (from the mean latency).

    Seeded by the rule's seed and `key` (the scenario id): the same inputs give the same
    intervals, whatever else is compared alongside.
    """
    import numpy as np

    rng = np.random.default_rng([rule.seed, zlib.crc32(key.encode())])
    base = bootstrap_statistics(baseline, rule.resamples, rng)
    cand = bootstrap_statistics(candidate, rule.resamples, rng)
    pb, pc = point_statistics(baseline), point_statistics(candidate)
    alpha = (1 - rule.confidence) / 2
    out = {}
    drifts = {
        side: {stat: drift(times, stat, rng) for stat in ("median", "mean", "p99")}
        for side, times in (("baseline", baseline), ("candidate", candidate))
    }
    for metric, stat in (("median", "median"), ("p99", "p99"), ("throughput", "mean")):
        if metric == "throughput":  # samples/s = batch / mean latency
            change = pb[stat] / pc[stat] - 1
            samples = base[stat] / cand[stat] - 1
        else:
            change = pc[stat] / pb[stat] - 1
            samples = cand[stat] / base[stat] - 1
        low, high = np.quantile(samples, [alpha, 1 - alpha])
        known: dict[str, float] = {}
        for side in ("baseline", "candidate"):
            # A machine that switched state moves every statistic, and a statistic's own chunk
            # values may be too noisy to show it: the median is also judged against nothing
            # else, the mean (throughput) against the median's drift too, and the p99 against
            # the median's and the mean's (the mean carries the stalls that make a tail).
            found = [drifts[side][s] for s in _DRIFT_JUDGED_BY[metric] if drifts[side][s] is not None]
            if found:
                known[side] = max(found)
        side = max(known, key=known.__getitem__) if known else None
        out[metric] = Estimate(float(change), (float(low), float(high)), known.get(side), side)
    return out


def verdict_with_ci(
    change: float, ci: tuple[float, float], threshold: float, higher_is_better: bool, drift: float | None = None
) -> str:
    """regressed/improved: |change| >= threshold in that direction, the CI excludes 0, and the
    change is beyond the drift within either run, with a margin (as ratios:
    1 + |change| >= (1 + threshold) * (1 + drift) * (1 + min(drift, threshold)); on a steady
    machine, drift 0, that is the threshold alone); unchanged: the CI lies within +-threshold
    and neither run drifted by the threshold; inconclusive otherwise.

    Why the margin: when one run spent most of its time in a machine's busy state and the
    other in its quiet state, the change between them is the whole switch, while each run's
    drift (measured on chunks that mix both states) comes out a little smaller than it."""
    sign = -1.0 if higher_is_better else 1.0  # "badness": positive when worse
    bad = sign * change
    low, high = sorted((sign * ci[0], sign * ci[1]))
    wander = drift or 0.0
    # compared as ratios: a throughput halving (-50 %) is as big as a latency doubling (+100 %)
    needed = math.log1p(threshold) + math.log1p(wander) + math.log1p(min(wander, threshold))
    beyond_drift = change <= -1 or abs(math.log1p(change)) >= needed - 1e-12
    if bad >= threshold and low > 0 and beyond_drift:
        return "regressed"
    if bad <= -threshold and high < 0 and beyond_drift:
        return "improved"
    if -threshold < low and high < threshold and wander < threshold:
        return "unchanged"
    return "inconclusive"


def verdict_single(
    change: float, threshold: float, higher_is_better: bool, absolute: float | None = None, min_absolute: float = 0.0
) -> str:
    """One value per run: beyond the threshold is a regression/improvement, unless the absolute
    change is below `min_absolute` (then inconclusive)."""
    bad = -change if higher_is_better else change
    if abs(bad) < threshold:
        return "unchanged"
    if absolute is not None and abs(absolute) < min_absolute:
        return "inconclusive"
    return "regressed" if bad > 0 else "improved"


# --- comparing -----------------------------------------------------------------------------------


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(_flat(value[key], f"{prefix}.{key}"))
        return out
    return {prefix: value}


def _comparable_view(environment: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for key in FINGERPRINT_KEYS:
        view.update(_flat(environment.get(key), key))
    view["allocator"] = environment.get("allocator")
    env_vars = environment.get("env_vars") if isinstance(environment.get("env_vars"), dict) else {}
    for name, value in env_vars.items():
        if name.startswith(_THREAD_VAR_PREFIXES) and name not in _PER_SCENARIO_VARS or name == "LD_PRELOAD":
            view[f"env_vars.{name}"] = value
    return view


def environment_differences(baseline: RunFolder, candidate: RunFolder) -> list[str]:
    """What makes the two environments incomparable, one line per difference ([] when none)."""
    a, b = baseline.environment, candidate.environment
    if not a or not b:
        fa, fb = baseline.fingerprint, candidate.fingerprint
        if fa and fb and fa != fb:
            missing = "baseline" if not a else "candidate"
            return [f"environment fingerprints differ ({fa} vs {fb}); the {missing} has no environment.json to say how"]
        return []
    return _view_differences(a, b)


def _view_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    va, vb = _comparable_view(a), _comparable_view(b)
    out = []
    for key in sorted(set(va) | set(vb)):
        if key.startswith("isa.") and not va.get(key) and not vb.get(key):
            continue  # an instruction set absent on both, whether listed or not
        if va.get(key) != vb.get(key):
            out.append(f"{key}: {_show(va.get(key))} (baseline) vs {_show(vb.get(key))} (candidate)")
    return out


def is_fleet_run(run: RunFolder) -> bool:
    """Every row measured on a fleet host (bench.measure.fleet): the run's environment.json is the client's."""
    return bool(run.results) and all(r.record.fleet is not None for r in run.results.values())


def _row_environment(run: RunFolder, fp: str) -> dict[str, Any] | None:
    """The environment a row with fingerprint `fp` was measured in, when the run keeps it: a fleet
    run folder's environments/<fp>.json; a local run's environment.json if it has that fingerprint
    (a fleet run's environment.json is its client's, which measured nothing, whatever its fingerprint)."""
    if not is_fleet_run(run):
        return run.environment if run.environment.get("fingerprint") == fp else None
    return run.host_environments.get(fp) or None  # {}: the file was unreadable (runfolder warned)


def host_differences(
    pairs: Sequence[tuple[str, ScenarioResult, ScenarioResult]], baseline: RunFolder, candidate: RunFolder
) -> list[str]:
    """When either run is a fleet run: paired scenarios whose measuring hosts' environments differ.

    Each row's own environment_fingerprint is compared (a local run's rows carry the local
    machine's; a fleet run's environment.json is the client's, which measured nothing), and the
    difference is explained key by key from the environments the runs keep
    (environments/<fingerprint>.json in a fleet run folder, environment.json of a local one)."""
    out = []
    why: dict[tuple[str, str], str | None] = {}
    for label, base, cand in pairs:
        fa, fb = base.record.environment_fingerprint, cand.record.environment_fingerprint
        if not fa or not fb:
            continue  # a row measured nowhere (a fleet scenario given up): its status says so
        key = (str(fa), str(fb))
        if key not in why:
            why[key] = _explain_hosts(baseline, candidate, *key)
        if why[key] is not None:
            out.append(f"{label}: measured on host environment {fa} (baseline) vs {fb} (candidate){why[key]}")
    return out


def _explain_hosts(baseline: RunFolder, candidate: RunFolder, fa: str, fb: str) -> str | None:
    """None when the two hosts' environments are comparable; else what differs, as a suffix."""
    ea, eb = _row_environment(baseline, fa), _row_environment(candidate, fb)
    if ea is not None and eb is not None:
        keys = _view_differences(ea, eb)
        if keys:
            return " (" + "; ".join(keys) + ")"
        return None if fa == fb else ""
    if fa == fb:
        return None
    missing = [f"{side} host ({fp})" for side, fp, env in (("baseline", fa, ea), ("candidate", fb, eb)) if env is None]
    return f" (no environment is kept for the {' or the '.join(missing)} to say how)"


def _show(value: Any) -> str:
    return "missing" if value is None else str(value)


def _shape_key(record: ResultRecord) -> tuple:
    """What a scenario is, but for its thread settings (the id's other parts, host group, variant, modes).

    Records are upgraded (bench.results.record.upgrade_row): a row from before an axis existed holds its default."""
    shape = record.input_shape
    return (
        record.model,
        record.batch_size,
        record.precision,
        record.load,
        tuple(shape) if isinstance(shape, list) else shape,
        record.host_group,
        record.variant,
        record.grad_mode,
        record.module_mode,
    )


def _threads_of(record: ResultRecord) -> str:
    text = f"threads={record.threads}"
    if record.interop_threads not in (None, 1):
        text += f", interop_threads={record.interop_threads}"
    return text


def _pair_scenarios(
    baseline: RunFolder, candidate: RunFolder
) -> tuple[list[tuple[str, ScenarioResult, ScenarioResult]], list[str], list[str], list[str]]:
    """Scenarios matched by id; differences in thread settings; and what only one side has.

    Scenarios whose ids differ only by their thread settings (tiny_mlp-b1-t1-... and
    tiny_mlp-b1-t2-...) are paired as well, with the difference named: comparing them
    compares thread counts, not code.
    """
    pairs, differences = [], []
    for sid, base in baseline.results.items():
        cand = candidate.results.get(sid)
        if cand is None:
            continue
        settings = [(name, getattr(base.record, name), getattr(cand.record, name)) for name in _THREAD_FIELDS]
        diffs = [f"{name} {b} vs {c}" for name, b, c in settings if b is not None and c is not None and b != c]
        if diffs:
            differences.append(f"{sid}: {', '.join(diffs)} (baseline vs candidate)")
        pairs.append((sid, base, cand))
    only_base = [s for s in baseline.results if s not in candidate.results]
    only_cand = [s for s in candidate.results if s not in baseline.results]
    by_shape: dict[tuple, tuple[list[ScenarioResult], list[ScenarioResult]]] = {}
    for sid in only_base:
        by_shape.setdefault(_shape_key(baseline.results[sid].record), ([], []))[0].append(baseline.results[sid])
    for sid in only_cand:
        by_shape.setdefault(_shape_key(candidate.results[sid].record), ([], []))[1].append(candidate.results[sid])
    for base_list, cand_list in by_shape.values():
        if not base_list or not cand_list:
            continue
        base_set = {_threads_of(r.record) for r in base_list}
        cand_set = {_threads_of(r.record) for r in cand_list}
        if base_set == cand_set:
            continue  # the same thread settings: whatever makes their ids differ, it is not threads
        base_threads, cand_threads = ", ".join(sorted(base_set)), ", ".join(sorted(cand_set))
        names = " / ".join(r.scenario_id for r in base_list + cand_list)
        differences.append(f"{names}: {base_threads} in the baseline, {cand_threads} in the candidate")
        if len(base_list) == 1 and len(cand_list) == 1:
            base, cand = base_list[0], cand_list[0]
            pairs.append((f"{base.scenario_id} vs {cand.scenario_id}", base, cand))
            only_base.remove(base.scenario_id)
            only_cand.remove(cand.scenario_id)
    return pairs, differences, only_base, only_cand


def _memory_metric(base: ResultRecord, cand: ResultRecord) -> Metric:
    kernel = METRICS["peak_rss_kernel"]
    if kernel.of(base) is not None and kernel.of(cand) is not None:
        return kernel
    return METRICS["peak_rss"]


def _cpu_note(base: ResultRecord, cand: ResultRecord, threshold: float) -> str:
    """A note when the worker got a different share of the CPU in the two runs.

    Only a note, never a verdict: a change in the code (a sleep, I/O, more threads) moves
    cpu_utilization too, and the two cannot be told apart from these numbers alone.
    """
    ub, uc = base.cpu_utilization, cand.cpu_utilization
    if not isinstance(ub, int | float) or not isinstance(uc, int | float) or min(ub, uc) <= 0:
        return ""
    if abs(uc / ub - 1) < 2 * threshold:
        return ""
    return f"CPU utilization {ub:.2f} vs {uc:.2f}: was the machine busier in one run?"


def compare_scenario(label: str, base: ScenarioResult, cand: ScenarioResult, rule: Rule) -> list[Row]:
    if base.status != "ok" or cand.status != "ok":
        if base.status == "ok":
            verdict = "regressed"
        elif cand.status == "ok":
            verdict = "improved"
        else:
            verdict = "unchanged"
        reason = (cand.reason if cand.status != "ok" else base.reason) or ""
        note = reason.splitlines()[0][:160] if reason else ""
        return [Row(label, "status", "status", "", base.status, cand.status, verdict=verdict, note=note)]
    rows = []
    changes = None
    no_rounds_note = ""
    fewest = min(len(base.round_times or ()), len(cand.round_times or ()))
    if fewest >= MIN_ROUNDS_FOR_CI:
        changes = bootstrap_changes(base.round_times, cand.round_times, rule, label)
    elif not base.round_times or not cand.round_times:
        side = "baseline" if not base.round_times else "candidate"
        no_rounds_note = f"no raw round times in the {side}: no confidence interval"
    else:
        no_rounds_note = f"only {fewest} rounds: too few for a confidence interval"
    cpu_note = _cpu_note(base.record, cand.record, rule.threshold)
    for name in COMPARED:
        metric = _memory_metric(base.record, cand.record) if name == "peak_rss" else METRICS[name]
        b, c = metric.of(base.record), metric.of(cand.record)
        row = Row(label, name, "peak RSS" if name == "peak_rss" else metric.title, metric.display_unit, b, c)
        if b is None or c is None or b <= 0:
            row.verdict, row.note = (
                "inconclusive",
                "missing in " + ("the baseline" if b is None or b <= 0 else "the candidate"),
            )
            rows.append(row)
            continue
        row.change = c / b - 1
        if name == "peak_rss":
            row.verdict = verdict_single(row.change, rule.memory_threshold, False)
            row.note = (
                "kernel VmHWM, one value per run" if metric.name == "peak_rss_kernel" else "sampled, one value per run"
            )
        elif name == "load":
            row.verdict = verdict_single(row.change, rule.load_threshold, False, c - b, rule.load_min_s)
            row.note = "one value per run"
            if row.verdict == "inconclusive":
                row.note += f"; moved less than {rule.load_min_s * 1e3:g} ms"
            elif row.verdict == "unchanged" and abs(row.change) >= rule.threshold:
                row.verdict = "inconclusive"  # more than noise-free, less than a doubling: one event cannot tell
                row.note += f"; only a change past {rule.load_threshold:.0%} is flagged"
        elif changes is not None:
            estimate = changes[name]
            row.change, row.ci = estimate.change, estimate.ci
            row.verdict = verdict_with_ci(row.change, row.ci, rule.threshold, metric.higher_is_better, estimate.drift)
            if estimate.drift is not None and estimate.drift >= rule.threshold:
                row.note = (
                    f"the {estimate.drift_side} run drifted by {estimate.drift:.0%} (stretches of its rounds "
                    "disagree: a busy machine?)"
                )
            if cpu_note:
                row.note = f"{row.note}; {cpu_note}" if row.note else cpu_note
        else:
            row.verdict = verdict_single(row.change, rule.threshold, metric.higher_is_better)
            if row.verdict != "unchanged":
                row.verdict = "inconclusive"
            row.note = no_rounds_note
        rows.append(row)
    contended = [side for side, r in (("baseline", base.record), ("candidate", cand.record)) if r.contended]
    for row in rows if contended else ():
        if row.metric != "peak_rss":  # time figures only: memory does not depend on the neighbours
            row.verdict = "inconclusive"
            note = f"the {' and '.join(contended)} row was measured on a contended host (see its contention)"
            row.note = f"{note}; {row.note}" if row.note else note
    kinds = [r.worker_kind for r in (base.record, cand.record)]  # upgraded: rows from before kinds say fresh
    for row in rows if kinds[0] != kinds[1] else ():
        if row.metric.startswith("peak_rss"):  # a forked worker shares the zygote's pages: another RSS baseline
            row.verdict = "inconclusive"
            note = f"measured with {kinds[0]} then {kinds[1]} workers, whose RSS baselines differ (bench run --worker)"
            row.note = f"{note}; {row.note}" if row.note else note
    return rows


def compare_runs(
    baseline: RunFolder, candidate: RunFolder, rule: Rule | None = None, *, allow_env_mismatch: bool = False
) -> Comparison:
    """Compare two runs; IncomparableError (a UserError) when they measured different things."""
    rule = rule or Rule()
    pairs, thread_diffs, only_base, only_cand = _pair_scenarios(baseline, candidate)
    host_wise = is_fleet_run(baseline) or is_fleet_run(candidate)
    if host_wise:
        # A fleet run's environment.json is the client's, which measured nothing: compare each
        # matched row's own host (a local run's rows carry the local machine's fingerprint).
        env_diffs = host_differences(pairs, baseline, candidate)
    else:
        env_diffs = environment_differences(baseline, candidate)
    if (env_diffs or thread_diffs) and not allow_env_mismatch:
        parts = []
        if env_diffs:
            parts.append("their environments differ: " + "; ".join(env_diffs))
        if thread_diffs:
            parts.append(
                "thread settings differ: " + "; ".join(thread_diffs[:10]) + (" ..." if len(thread_diffs) > 10 else "")
            )
        raise IncomparableError(
            f"refusing to compare {baseline.run_id} with {candidate.run_id}: "
            + ". Also, ".join(parts)
            + ". Their differences would be measured, not your change. Compare runs made on the same machine "
            "and software, or pass --allow-env-mismatch to compare anyway (every row then carries a warning)"
        )
    if not pairs:
        raise UserError(
            f"the baseline {baseline.run_id} and the candidate {candidate.run_id} have no scenario in common "
            f"(baseline: {_some(list(baseline.results))}; candidate: {_some(list(candidate.results))}). "
            "Scenario ids name model, batch, threads, precision and load: run the same suite on both sides"
        )
    rows: list[Row] = []
    for label, base, cand in pairs:
        rows.extend(compare_scenario(label, base, cand, rule))
    warnings = [f"baseline: {w}" for w in baseline.warnings] + [f"candidate: {w}" for w in candidate.warnings]
    same = _same_measurements(baseline, candidate, pairs)
    if same:
        warnings.insert(0, same)
    mismatch = env_diffs + thread_diffs
    if mismatch:
        warnings.insert(0, "compared despite differences (--allow-env-mismatch): " + "; ".join(mismatch))
        env_keys = [] if host_wise else sorted({d.split(":")[0] for d in env_diffs})
        for row in rows:
            # Differences name their scenario first: "ID: ..." or, for a pair told apart by its
            # threads, "BASE_ID / CAND_ID: ..." (the row "BASE_ID vs CAND_ID"). Whole ids, not prefixes.
            sid = row.scenario_id.split(" vs ")[0]
            scenario_thread = any(d.startswith((f"{sid}: ", f"{sid} / ")) for d in thread_diffs)
            what = []
            if host_wise and any(d.startswith(f"{row.scenario_id}: ") for d in env_diffs):
                what.append("host environment differs")
            if env_keys:
                what.append(
                    "environment differs (" + ", ".join(env_keys[:4]) + (" ..." if len(env_keys) > 4 else "") + ")"
                )
            if scenario_thread:
                what.append("thread settings differ")
            if what:
                row.note = "WARNING: " + "; ".join(what) + (f"; {row.note}" if row.note else "")
    if only_base:
        warnings.append(f"{len(only_base)} scenario(s) only in the baseline: {_some(only_base)}")
    if only_cand:
        warnings.append(f"{len(only_cand)} scenario(s) only in the candidate: {_some(only_cand)}")
    return Comparison(baseline, candidate, rule, rows, env_diffs, thread_diffs, only_base, only_cand, warnings)


def _same_measurements(
    baseline: RunFolder, candidate: RunFolder, pairs: Sequence[tuple[str, ScenarioResult, ScenarioResult]]
) -> str | None:
    """A warning when both sides hold the same measurements: one run given twice, or a copy of it.
    Comparing a run with itself read 19 of 30 metrics inconclusive (intervals wider than the
    threshold around a change of exactly 0), with nothing saying no second measurement existed."""
    consequence = (
        "every change is 0 by construction, and the verdicts say nothing about a change. Compare two "
        "runs measured apart"
    )
    if baseline.run_id == candidate.run_id:
        return f"the baseline and the candidate are the same run ({baseline.run_id}): {consequence}"
    if all(b.round_times == c.round_times and b.record.latency_s == c.record.latency_s for _, b, c in pairs) and any(
        b.record.latency_s is not None for _, b, _ in pairs
    ):
        return (
            f"the baseline {baseline.run_id} and the candidate {candidate.run_id} hold identical measurements "
            f"(every scenario's round times and latency figures are equal): one run copied, not two. " + consequence
        )
    return None


def _some(names: Sequence[str], limit: int = 5) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- resolving BASELINE and CANDIDATE ------------------------------------------------------------


# --- output --------------------------------------------------------------------------------------


def _value(row: Row, value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    metric = METRICS.get(row.metric)
    if row.metric == "peak_rss":
        metric = METRICS["peak_rss"]
    return metric.display(value) if metric else f"{value:g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _ci(row: Row) -> str:
    if row.ci is None:
        return "-"
    return f"[{row.ci[0]:+.1%}, {row.ci[1]:+.1%}]"


def _table_rows(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    return [
        (
            r.scenario_id,
            r.title,
            _value(r, r.baseline),
            _value(r, r.candidate),
            _pct(r.change),
            _ci(r),
            r.verdict,
            r.note,
        )
        for r in rows
    ]


def _header(comparison: Comparison) -> tuple[str, ...]:
    return (
        "scenario",
        "metric",
        "baseline",
        "candidate",
        "change",
        f"{comparison.rule.confidence:.0%} CI",
        "verdict",
        "note",
    )


def format_text(comparison: Comparison, *, changes_only: bool = False) -> str:
    rows = [r for r in comparison.rows if not changes_only or r.verdict != "unchanged"]
    lines = [
        f"baseline:  {comparison.baseline.describe()}  [{comparison.baseline.source}]",
        f"candidate: {comparison.candidate.describe()}  [{comparison.candidate.source}]",
        "",
    ]
    for warning in comparison.warnings:
        lines.append(f"warning: {warning}")
    if comparison.warnings:
        lines.append("")
    if rows:
        lines.append(format_table(_header(comparison), _table_rows(rows), right=(2, 3, 4)))
    else:
        lines.append("every metric of every scenario is unchanged")
    lines += ["", f"rule: {comparison.rule.describe()}", f"summary: {comparison.summary()}"]
    return "\n".join(lines)


def format_markdown(comparison: Comparison, *, status_mark: bool = False) -> str:
    """A pull-request comment; `status_mark` starts the heading with a pass/fail mark (a job summary)."""
    counts = {v: comparison.count(v) for v in VERDICTS}
    headline = ", ".join(f"**{n} {v}**" if v == "regressed" and n else f"{n} {v}" for v, n in counts.items())
    if status_mark:
        headline = (":x: " if comparison.regressed else ":white_check_mark: ") + headline
    b, c = comparison.baseline, comparison.candidate
    lines = [
        f"### bench compare: {headline}",
        "",
        f"Baseline `{b.run_id}`{_md_sha(b)} → candidate `{c.run_id}`{_md_sha(c)}, "
        f"{comparison.scenarios} scenarios compared.",
        "",
    ]
    for warning in comparison.warnings:
        lines.append(f"> :warning: {cell(warning)}")
    if comparison.warnings:
        lines.append("")

    def rows_table(rows: Sequence[Row]) -> list[str]:
        body = []
        for row, texts in zip(rows, _table_rows(rows), strict=True):
            cells = [cell(x) for x in texts]
            cells[6] = f"**{row.verdict}**" if row.verdict in ("regressed", "improved") else row.verdict
            body.append(cells)
        return [table(list(_header(comparison)), body, ["", "", "r", "r", "r", "", "", ""])]

    notable = [r for r in comparison.rows if r.verdict != "unchanged"]
    order = {v: i for i, v in enumerate(VERDICTS)}
    notable.sort(key=lambda r: order[r.verdict])
    if notable:
        lines += rows_table(notable)
    else:
        lines.append("No change beyond the thresholds.")
    lines += ["", f"<details><summary>All {len(comparison.rows)} comparisons</summary>", ""]
    lines += rows_table(comparison.rows)
    lines += ["", "</details>", "", f"<sub>{cell(comparison.rule.describe())}</sub>", ""]
    return "\n".join(lines)


def _annotation(text: str) -> str:
    """A workflow command's message: GitHub reads %, CR and LF as escapes there."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_annotations(comparison: Comparison) -> list[str]:
    """One `::error` line per regressed metric and one `::warning` per warning, for the job's log and summary."""
    lines = [
        f"::error title=bench compare: {_annotation(row.scenario_id)}::{_annotation(row.title)} regressed "
        f"({_pct(row.change)}: {_value(row, row.baseline)} -> {_value(row, row.candidate)})"
        for row in comparison.rows
        if row.verdict == "regressed"
    ]
    lines += [f"::warning title=bench compare::{_annotation(w)}" for w in comparison.warnings]
    return lines


def _md_sha(run: RunFolder) -> str:
    parts = []
    if run.git_sha:
        parts.append(f"sha `{run.git_sha[:10]}`")
    if run.history_label:
        parts.append(f"label `{run.history_label}`")
    return f" ({', '.join(parts)})" if parts else ""


def to_json(comparison: Comparison) -> dict[str, Any]:
    def run(r: RunFolder) -> dict[str, Any]:
        return {
            "run_id": r.run_id,
            "source": r.source,
            "started_at": r.started_at,
            "git_sha": r.git_sha,
            "branch": r.branch,
            "label": r.history_label,
            "suite": r.suite,
            "environment_fingerprint": r.fingerprint,
        }

    return {
        "baseline": run(comparison.baseline),
        "candidate": run(comparison.candidate),
        "rule": {**asdict(comparison.rule), "description": comparison.rule.describe()},
        "comparable": comparison.comparable,
        "environment_differences": comparison.environment_differences,
        "thread_differences": comparison.thread_differences,
        "baseline_only": comparison.baseline_only,
        "candidate_only": comparison.candidate_only,
        "warnings": comparison.warnings,
        "summary": {**{v: comparison.count(v) for v in VERDICTS}, "scenarios": comparison.scenarios},
        "rows": [r.to_dict() for r in comparison.rows],
    }


# --- command line --------------------------------------------------------------------------------
