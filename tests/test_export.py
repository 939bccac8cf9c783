"""bench export: each format checked against its published schema or parser."""

from __future__ import annotations

import json

import jsonschema
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from support.demo_runs import DEMO, EVIL, Spec, make_run

from bench.analysis.export import to_bencher, to_github_action_benchmark, to_openmetrics
from bench.cli import main
from bench.results.runfolder import load_run

# Bencher Metric Format's JSON Schema, as bencher.dev/docs/reference/bencher-metric-format publishes it.
BMF_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "patternProperties": {
        ".+": {
            "type": "object",
            "patternProperties": {
                ".+": {
                    "type": "object",
                    "properties": {
                        "value": {"type": "number"},
                        "lower_value": {"type": "number"},
                        "upper_value": {"type": "number"},
                    },
                    "required": ["value"],
                }
            },
        }
    },
}
# github-action-benchmark's BenchmarkResult (src/extract.ts): what customSmallerIsBetter reads.
GAB_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "value": {"type": "number"},
            "unit": {"type": "string"},
            "range": {"type": "string"},
            "extra": {"type": "string"},
        },
        "required": ["name", "value", "unit"],
        "additionalProperties": False,
    },
}
OK_IDS = {s.scenario_id for s in DEMO if s.status == "ok"}


@pytest.fixture
def records(tmp_path):
    return load_run(make_run(tmp_path)).records


def test_github_action_benchmark_entries_follow_its_format_with_smaller_is_better_metrics_only(records):
    entries = json.loads(to_github_action_benchmark(records))
    jsonschema.validate(entries, GAB_SCHEMA)
    assert {e["name"].split(" ", 1)[0] for e in entries} == OK_IDS  # failed and unsupported rows carry nothing
    assert not any("throughput" in e["name"] for e in entries)  # bigger is better: not in this file
    median = next(e for e in entries if e["name"] == "tiny_mlp-b1-t1-fp32-eager median latency")
    record = next(r for r in records if r.scenario_id == "tiny_mlp-b1-t1-fp32-eager")
    assert median["unit"] == "ms" and median["value"] == pytest.approx(record.latency_s.median * 1e3)
    rss = next(e for e in entries if e["name"] == "tiny_mlp-b1-t1-fp32-eager peak RSS")
    assert rss == {**rss, "unit": "MiB", "value": pytest.approx(record.rss_bytes.peak / 2**20)}


def test_bencher_metric_format_validates_and_latency_is_in_nanoseconds(records):
    bmf = json.loads(to_bencher(records))
    jsonschema.validate(bmf, BMF_SCHEMA)
    assert set(bmf) == OK_IDS
    record = next(r for r in records if r.scenario_id == "tiny_cnn-b4-t1-fp32-eager")
    latency = bmf[record.scenario_id]["latency"]
    assert latency["value"] == pytest.approx(record.latency_s.median * 1e9)
    assert latency["lower_value"] <= latency["value"] <= latency["upper_value"]
    assert bmf[record.scenario_id]["throughput"]["value"] == pytest.approx(record.throughput_samples_per_s)


def test_openmetrics_text_parses_with_the_reference_parser_and_escapes_label_values(tmp_path):
    odd = Spec(model=f'm"{EVIL}\\x')  # a quote, a backslash, markup: label values must be escaped
    records = load_run(make_run(tmp_path, [*DEMO, odd])).records
    text = to_openmetrics(records)
    families = {f.name: f for f in text_string_to_metric_families(text)}  # raises on any format error
    assert text.endswith("# EOF\n")
    median = families["bench_latency_median_seconds"]
    assert median.type == "gauge" and median.unit == "seconds"
    samples = {s.labels["scenario"]: s for s in median.samples}
    assert set(samples) == OK_IDS | {odd.scenario_id}
    assert samples[odd.scenario_id].labels["model"] == odd.model
    assert samples["tiny_mlp-b1-t1-fp32-eager"].value == pytest.approx(
        next(r.latency_s.median for r in records if r.scenario_id == "tiny_mlp-b1-t1-fp32-eager")
    )
    ok = {s.labels["scenario"]: s.value for s in families["bench_scenario_ok"].samples}
    assert ok["tiny_cnn-b2-t2-fp32-eager"] == 0 and ok["tiny_mlp-b1-t1-fp32-eager"] == 1
    assert len(ok) == len(DEMO) + 1


def test_the_cli_writes_each_format_and_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    for fmt in ("github-action-benchmark", "bencher", "openmetrics"):
        out = tmp_path / f"out.{fmt}"
        assert main(["export", str(run_dir), "--format", fmt, "--output", str(out)]) == 0
        assert out.read_text().strip()
    assert f"{len(OK_IDS)} of {len(DEMO)} rows with figures" in capsys.readouterr().out
    assert main(["export", str(run_dir), "--format", "bencher"]) == 0  # standard output
    assert set(json.loads(capsys.readouterr().out)) == OK_IDS
    assert main(["export", str(tmp_path), "--format", "bencher"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
