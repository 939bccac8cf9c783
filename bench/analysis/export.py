"""`bench export RUN --format FORMAT`: a run's rows in the formats that existing dashboards read.

- `github-action-benchmark`: the `customSmallerIsBetter` tool's input, a JSON array of
  {name, unit, value, range, extra} (benchmark-action/github-action-benchmark). Only metrics
  where smaller is better go in: latency, peak RSS, load and first-inference time.
- `bencher`: Bencher Metric Format (BMF) JSON, {benchmark: {measure: {value, lower_value,
  upper_value}}}. `latency` is Bencher's built-in measure, in nanoseconds; `throughput` is
  samples per second; the rest are measures that Bencher creates on first sight.
- `openmetrics`: the OpenMetrics text exposition (Prometheus-style scraping or a pushgateway),
  one gauge family per metric with the scenario's axes as labels, ending in `# EOF`.

Only `ok` rows carry figures. OpenMetrics also says, per scenario, whether it was ok
(`bench_scenario_ok`), so a dashboard sees a scenario that began to fail.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.format.units import MIB
from bench.results.record import ResultRecord

FORMATS = ("github-action-benchmark", "bencher", "openmetrics")
_NS_PER_S = 1e9


@dataclass(frozen=True)
class Metric:
    """One figure of an ok row, named once for every format."""

    key: str  # OpenMetrics family and Bencher measure slug
    label: str  # what a person reads in github-action-benchmark's chart title
    unit: str  # OpenMetrics unit (a suffix of the family name)
    value: Callable[[ResultRecord], float | None]  # in `unit`
    smaller_is_better: bool = True


def _latency(stat: str) -> Callable[[ResultRecord], float | None]:
    return lambda r: None if r.latency_s is None else getattr(r.latency_s, stat)


METRICS = (
    Metric("latency_median", "median latency", "seconds", _latency("median")),
    Metric("latency_p99", "p99 latency", "seconds", _latency("p99")),
    Metric("load", "load time", "seconds", lambda r: r.load_s),
    Metric("first_inference", "first inference", "seconds", lambda r: r.first_inference_s),
    Metric("peak_rss", "peak RSS", "bytes", lambda r: r.rss_bytes.peak),
    Metric(
        "throughput",
        "throughput",
        "samples_per_second",
        lambda r: r.throughput_samples_per_s,
        smaller_is_better=False,
    ),
)

# Labels of every OpenMetrics sample: what tells two scenarios apart on a dashboard.
_LABELS = ("scenario", "model", "batch_size", "threads", "precision", "load", "runtime")


def _figures(record: ResultRecord) -> list[tuple[Metric, float]]:
    """(metric, value) for each metric an ok row has a finite value for."""
    if record.status != "ok":
        return []
    pairs = [(m, m.value(record)) for m in METRICS]
    return [(m, float(v)) for m, v in pairs if v is not None and math.isfinite(v)]


def _extra(record: ResultRecord) -> str:
    rounds = record.latency_s.rounds if record.latency_s else None
    return (
        f"run: {record.run_id}\nthreads: {record.threads}, batch: {record.batch_size}\n"
        f"precision: {record.precision}, load: {record.load}\nrounds: {rounds}"
    )


def to_github_action_benchmark(records: Sequence[ResultRecord]) -> str:
    """customSmallerIsBetter entries: latencies in ms, times in s, memory in MiB (the chart's units)."""
    entries = []
    for record in records:
        for metric, value in _figures(record):
            if not metric.smaller_is_better:
                continue
            entry = {"name": f"{record.scenario_id} {metric.label}", "extra": _extra(record)}
            if metric.key.startswith("latency"):
                entry |= {"unit": "ms", "value": value * 1e3}
                if metric.key == "latency_median" and record.latency_s is not None:
                    entry["range"] = f"IQR {record.latency_s.iqr * 1e3:.4g} ms"
            elif metric.unit == "bytes":
                entry |= {"unit": "MiB", "value": value / MIB}
            else:
                entry |= {"unit": "s", "value": value}
            entries.append(entry)
    return json.dumps(entries, indent=2) + "\n"


def to_bencher(records: Sequence[ResultRecord]) -> str:
    """BMF: `latency` in ns, its lower_value the fastest round and its upper_value the p90 round."""
    benchmarks: dict[str, dict[str, dict[str, float]]] = {}
    for record in records:
        measures: dict[str, dict[str, float]] = {}
        for metric, value in _figures(record):
            if metric.key == "latency_median":
                stats = record.latency_s
                assert stats is not None  # _figures gave a median
                measures["latency"] = {
                    "value": value * _NS_PER_S,
                    "lower_value": stats.min * _NS_PER_S,
                    "upper_value": stats.p90 * _NS_PER_S,
                }
            elif metric.unit == "seconds":
                measures[metric.key.replace("_", "-") + "-ns"] = {"value": value * _NS_PER_S}
            elif metric.key == "throughput":
                measures["throughput"] = {"value": value}
            else:
                measures[metric.key.replace("_", "-") + "-bytes"] = {"value": value}
        if measures:
            benchmarks[record.scenario_id] = measures
    return json.dumps(benchmarks, indent=2) + "\n"


def _label_value(value: object) -> str:
    """An OpenMetrics label value: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(record: ResultRecord) -> str:
    values = {
        "scenario": record.scenario_id,
        "model": record.model,
        "batch_size": record.batch_size,
        "threads": record.threads,
        "precision": record.precision,
        "load": record.load,
        "runtime": record.runtime,
    }
    return ",".join(f'{name}="{_label_value(values[name])}"' for name in _LABELS)


def to_openmetrics(records: Sequence[ResultRecord]) -> str:
    lines: list[str] = []
    for metric in METRICS:
        family = f"bench_{metric.key}_{metric.unit}"
        samples = [(r, v) for r in records for m, v in _figures(r) if m is metric]
        if not samples:
            continue
        lines += [
            f"# TYPE {family} gauge",
            f"# UNIT {family} {metric.unit}",
            f"# HELP {family} {metric.label} of the scenario (bench run)",
        ]
        lines += [f"{family}{{{_labels(r)}}} {v!r}" for r, v in samples]
    lines += [
        "# TYPE bench_scenario_ok gauge",
        "# HELP bench_scenario_ok 1 when the scenario's row is ok, 0 when it failed or is unsupported",
    ]
    lines += [f"bench_scenario_ok{{{_labels(r)}}} {int(r.status == 'ok')}" for r in records]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


WRITERS: dict[str, Callable[[Sequence[ResultRecord]], str]] = {
    "github-action-benchmark": to_github_action_benchmark,
    "bencher": to_bencher,
    "openmetrics": to_openmetrics,
}
